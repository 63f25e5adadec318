//! Making a Supervisor that comes back with its saved state look for its ring again.
//!
//! A Supervisor saves every rumor it knows in `/hab/sup/default/data/<member-id>.rst` and reads
//! them back at start. Among them is the member list, with each member's last address. A restored
//! member list counts as "knowing the ring", so the Supervisor pings those addresses and never reads
//! its peer watch file; when every pod of the ring came back on new addresses (a scale to zero and
//! back, a restore, a cluster restart) no two members ever meet again (issue 9, failure 4; Habitat
//! issues 6447 and 7510). Removing only the members section makes the Supervisor start as if it knew
//! nobody — so it reads the watch file — while it keeps what the ring published: service
//! configuration (`hab config apply`), files, elections and departures.
//!
//! The file (components/butterfly/src/rumor/dat_file.rs, header version 2): one version byte, then
//! eight little-endian u64 — the header size (64) and the byte lengths of the sections members,
//! services, service configs, service files, elections, election updates and departures — then the
//! sections in that order, each a run of `[u64 length][protobuf rumor]`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const VERSION: u8 = 2;
const HEADER_SIZE: u64 = 64;
const SECTIONS: usize = 7;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RumorFileError {
    #[error("not a rumor file of a known version: {0}")]
    Unknown(String),
    #[error("the rumor file is cut short or inconsistent: {0}")]
    Corrupt(String),
}

/// What `forget_members` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    /// Saved members removed.
    pub members: usize,
}

/// Returns the file without its members section, or `None` when it has none to remove.
pub fn forget_members(file: &[u8]) -> Result<Option<(Vec<u8>, Forgotten)>, RumorFileError> {
    let (&version, rest) = file.split_first().ok_or_else(|| RumorFileError::Unknown("empty file".into()))?;
    if version != VERSION {
        return Err(RumorFileError::Unknown(format!("header version {version}, expected {VERSION}")));
    }
    let word = |i: usize| -> Result<u64, RumorFileError> {
        rest.get(i * 8..i * 8 + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes")))
            .ok_or_else(|| RumorFileError::Corrupt("header shorter than 64 bytes".into()))
    };
    let header_size = word(0)?;
    if header_size != HEADER_SIZE {
        return Err(RumorFileError::Unknown(format!("header size {header_size}, expected {HEADER_SIZE}")));
    }
    let lengths: Vec<u64> = (1..=SECTIONS).map(word).collect::<Result<_, _>>()?;
    let body = &rest[HEADER_SIZE as usize..];
    let total = lengths.iter().try_fold(0u64, |sum, &len| sum.checked_add(len));
    if total != Some(body.len() as u64) {
        return Err(RumorFileError::Corrupt(format!(
            "sections add up to {total:?} bytes, the file holds {}",
            body.len()
        )));
    }
    let members_len = lengths[0] as usize;
    if members_len == 0 {
        return Ok(None);
    }
    let members = count_records(&body[..members_len])?;
    let mut out = Vec::with_capacity(file.len() - members_len);
    out.push(VERSION);
    out.extend(HEADER_SIZE.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    for len in &lengths[1..] {
        out.extend(len.to_le_bytes());
    }
    out.extend(&body[members_len..]);
    Ok(Some((out, Forgotten { members })))
}

/// Counts the `[u64 length][bytes]` records of a section, checking that they fill it exactly.
fn count_records(mut section: &[u8]) -> Result<usize, RumorFileError> {
    let mut count = 0;
    while !section.is_empty() {
        let len = section
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes")))
            .ok_or_else(|| RumorFileError::Corrupt("a record length is cut short".into()))?;
        section = usize::try_from(len)
            .ok()
            .and_then(|len| section.get(8..)?.get(len..))
            .ok_or_else(|| RumorFileError::Corrupt("a record runs past its section".into()))?;
        count += 1;
    }
    Ok(count)
}

/// The outcome for one `.rst` file of a state directory.
#[derive(Debug)]
pub struct FileOutcome {
    pub path: PathBuf,
    pub result: Result<Option<Forgotten>, String>,
}

/// Forgets the saved members of every rumor file in `<sup_state>/data` (`sup_state` is the
/// Supervisor's `/hab/sup/default`). Each file is replaced atomically; an unreadable or unknown
/// file is left as it is and reported. A missing directory means a first start: nothing to do.
pub fn forget_saved_members(sup_state: &Path) -> io::Result<Vec<FileOutcome>> {
    let data = sup_state.join("data");
    let entries = match fs::read_dir(&data) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut outcomes = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "rst") {
            continue;
        }
        let result = rewrite(&path).map_err(|e| e.to_string());
        outcomes.push(FileOutcome { path, result });
    }
    outcomes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(outcomes)
}

fn rewrite(path: &Path) -> Result<Option<Forgotten>, Box<dyn std::error::Error>> {
    let bytes = fs::read(path)?;
    let Some((trimmed, forgotten)) = forget_members(&bytes)? else { return Ok(None) };
    let temp = path.with_extension("rst.hab-bootstrap.tmp");
    fs::write(&temp, &trimmed)
        .and_then(|()| fs::File::open(&temp)?.sync_all())
        .and_then(|()| fs::rename(&temp, path))
        .inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })?;
    Ok(Some(forgotten))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u64).to_le_bytes().to_vec();
        out.extend(bytes);
        out
    }

    fn file(sections: [Vec<u8>; SECTIONS]) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(HEADER_SIZE.to_le_bytes());
        for s in &sections {
            out.extend((s.len() as u64).to_le_bytes());
        }
        for s in sections {
            out.extend(s);
        }
        out
    }

    fn sample() -> [Vec<u8>; SECTIONS] {
        let members = [record(b"member-a"), record(b"member-bb")].concat();
        let configs = record(b"port = 7001");
        [members, record(b"svc"), configs, vec![], record(b"election"), vec![], record(b"departed")]
    }

    #[test]
    fn only_the_members_section_goes() {
        let [_, services, configs, files, elections, updates, departures] = sample();
        let (trimmed, forgotten) = forget_members(&file(sample())).unwrap().unwrap();
        assert_eq!(forgotten, Forgotten { members: 2 });
        assert_eq!(trimmed, file([vec![], services, configs, files, elections, updates, departures]));
    }

    #[test]
    fn a_file_without_members_is_left_alone() {
        let [_, rest @ ..] = sample();
        let mut sections = [vec![], vec![], vec![], vec![], vec![], vec![], vec![]];
        sections[1..].clone_from_slice(&rest);
        assert_eq!(forget_members(&file(sections)).unwrap(), None);
    }

    #[test]
    fn unknown_or_damaged_files_are_refused_not_rewritten() {
        let good = file(sample());
        let mut v1 = good.clone();
        v1[0] = 1;
        assert!(matches!(forget_members(&v1), Err(RumorFileError::Unknown(_))));
        assert!(matches!(forget_members(&[]), Err(RumorFileError::Unknown(_))));
        assert!(matches!(forget_members(&good[..40]), Err(RumorFileError::Corrupt(_))));
        assert!(matches!(forget_members(&good[..good.len() - 1]), Err(RumorFileError::Corrupt(_))));
        let mut bad_record = good.clone();
        bad_record[65] = 0xff; // the first member record claims 255 bytes
        assert!(matches!(forget_members(&bad_record), Err(RumorFileError::Corrupt(_))));
        let mut huge = good;
        huge[9..17].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(forget_members(&huge).is_err());
    }

    #[test]
    fn a_state_directory_is_rewritten_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(forget_saved_members(dir.path()).unwrap().is_empty(), "no data dir: a first start");
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("abc.rst"), file(sample())).unwrap();
        fs::write(data.join("junk.rst"), b"not a rumor file").unwrap();
        fs::write(data.join("other.txt"), b"left alone").unwrap();
        let outcomes = forget_saved_members(dir.path()).unwrap();
        assert_eq!(outcomes.len(), 2);
        assert_eq!(outcomes[0].result, Ok(Some(Forgotten { members: 2 })));
        assert!(outcomes[1].result.is_err());
        assert_eq!(fs::read(data.join("junk.rst")).unwrap(), b"not a rumor file");
        assert_eq!(forget_members(&fs::read(data.join("abc.rst")).unwrap()).unwrap(), None);
        assert_eq!(fs::read_dir(&data).unwrap().count(), 3, "no temporary file left behind");
    }
}
