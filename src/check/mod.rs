//! `hab-bootstrap check`: what is wrong with the cluster, the install, the opted-in StatefulSets and
//! their Habitat rings, each problem with the command or change that fixes it.
//!
//! Pure: each area takes facts gathered at the edge ([`crate::commands::check`]) and returns
//! findings; this module renders them as text or JSON and decides the exit status.

pub mod cluster;
pub mod install;
pub mod ring;
pub mod statefulset;

use std::fmt::Write as _;

use serde::Serialize;

/// How a finding counts: only `Ok` and `Info` leave the exit status at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Info,
    Warning,
    Error,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✔",
            Status::Info => "·",
            Status::Warning => "⚠",
            Status::Error => "✘",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Status::Ok => "\x1b[32m",
            Status::Info => "\x1b[2m",
            Status::Warning => "\x1b[33m",
            Status::Error => "\x1b[31m",
        }
    }

    pub fn is_problem(self) -> bool {
        self >= Status::Warning
    }
}

/// One thing `check` looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The heading it is shown under: `cluster`, `install`, `statefulset ns/name`, `ring ns/name`.
    pub section: String,
    /// A stable identifier of what was checked (`ring.leaders`), for scripts and tests.
    pub check: &'static str,
    pub status: Status,
    pub message: String,
    /// The command or change that fixes it (problems only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(section: &str, check: &'static str, status: Status, message: impl Into<String>) -> Self {
        Self { section: section.to_owned(), check, status, message: message.into(), fix: None }
    }

    pub fn ok(section: &str, check: &'static str, message: impl Into<String>) -> Self {
        Self::new(section, check, Status::Ok, message)
    }

    pub fn info(section: &str, check: &'static str, message: impl Into<String>) -> Self {
        Self::new(section, check, Status::Info, message)
    }

    pub fn warning(
        section: &str,
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self { fix: Some(fix.into()), ..Self::new(section, check, Status::Warning, message) }
    }

    pub fn error(
        section: &str,
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self { fix: Some(fix.into()), ..Self::new(section, check, Status::Error, message) }
    }
}

/// Everything found, in the order it was checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub ok: bool,
}

impl Report {
    pub fn extend(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.findings.extend(findings);
    }

    pub fn summary(&self) -> Summary {
        let count = |s| self.findings.iter().filter(|f| f.status == s).count();
        let (errors, warnings) = (count(Status::Error), count(Status::Warning));
        Summary { errors, warnings, ok: errors + warnings == 0 }
    }

    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status.is_problem())
    }

    /// JSON: `{"findings": [...], "summary": {...}}`.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({ "findings": self.findings, "summary": self.summary() });
        serde_json::to_string_pretty(&value).expect("a report serializes") + "\n"
    }

    /// Text for people: one heading per section, one line per finding, the fix below each problem.
    pub fn to_text(&self, colour: bool) -> String {
        let paint = |status: Status, text: &str| {
            if colour { format!("{}{text}\x1b[0m", status.colour()) } else { text.to_owned() }
        };
        let mut out = String::new();
        let mut section: Option<&str> = None;
        for finding in &self.findings {
            if section != Some(finding.section.as_str()) {
                if section.is_some() {
                    out.push('\n');
                }
                let _ = writeln!(out, "{}", finding.section);
                section = Some(&finding.section);
            }
            let _ = writeln!(out, "  {} {}", paint(finding.status, finding.status.mark()), finding.message);
            if let Some(fix) = &finding.fix {
                for (i, line) in fix.lines().enumerate() {
                    let lead = if i == 0 { "fix:" } else { "    " };
                    let _ = writeln!(out, "      {lead} {line}");
                }
            }
        }
        let summary = self.summary();
        let _ = writeln!(out);
        if summary.ok {
            let _ = writeln!(out, "{}", paint(Status::Ok, "All is well."));
        } else {
            let line = format!("{} error(s), {} warning(s).", summary.errors, summary.warnings);
            let status = if summary.errors > 0 { Status::Error } else { Status::Warning };
            let _ = writeln!(out, "{}", paint(status, &line));
        }
        out
    }
}

/// `ns/name`, the way sections and messages name an object.
pub fn qualified(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_warnings_and_errors_are_problems() {
        let mut r = Report::default();
        r.extend([Finding::ok("cluster", "a", "fine"), Finding::info("cluster", "b", "note")]);
        assert!(r.summary().ok);
        r.extend([Finding::warning("install", "c", "meh", "do x")]);
        assert_eq!(r.summary(), Summary { errors: 0, warnings: 1, ok: false });
        let text = r.to_text(false);
        assert!(
            text.contains("cluster\n  ✔ fine\n  · note\n\ninstall\n  ⚠ meh\n      fix: do x\n"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        assert!(r.to_text(true).contains("\x1b[33m"));
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["findings"][2]["status"], "warning");
        assert_eq!(json["summary"]["ok"], false);
    }
}
