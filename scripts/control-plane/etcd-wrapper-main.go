// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3), built through a wrapper
// module by scripts/control-plane.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
