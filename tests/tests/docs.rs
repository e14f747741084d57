//! The guide's promises, checked against the repository and the code.
//!
//! - `relative_links_resolve`: every relative link in `README.md`,
//!   `lock-cli/README.md` and `docs/**/*.md` points at a file or directory
//!   that exists, and every `#anchor` into a markdown file names one of its
//!   headings (slug rule: [`slug`]).
//! - `the_dashboard_queries_what_the_code_records`: every metric that
//!   `docs/grafana/distlock.json` queries is a `distlock::metrics` constant,
//!   used as its type allows (a histogram only through `_bucket`, `_sum` or
//!   `_count`), and every label it selects or groups by is one the code sets
//!   on that metric. The labels are not copied into this file: they are
//!   recorded from the library itself, by running an in-memory scenario
//!   under a `metrics` debugging recorder, so the test fails when the code
//!   drops or renames a label the dashboard uses.
//!
//! `cargo test -p distlock-tests --test docs`. No etcd needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use distlock::metrics::{
    ACQUISITIONS, HANDOFF_SECONDS, HELD_LOCKS, HOLD_SECONDS, LEADERS, LEADER_SECONDS,
    LEADER_TRANSITIONS, LOSSES, RELEASES, RENEW_FAILURES, SESSIONS, WAITERS, WAIT_SECONDS,
};
use distlock::testing::{Fault, Faults, Op};
use distlock::{LockManager, LockOptions};
use metrics_util::debugging::DebuggingRecorder;
use metrics_util::MetricKind;

/// The workspace root (this package lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

// ------------------------------------------------------------- links ---

/// The markdown files whose links are checked: the front page, the
/// command's README, and the guide.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("lock-cli/README.md")];
    walk(&root.join("docs"), &mut files);
    files
}

/// A markdown file's links (line number, target) and heading anchors.
#[derive(Debug, Default)]
struct Markdown {
    links: Vec<(usize, String)>,
    anchors: BTreeSet<String>,
}

/// GitHub's heading anchor, the rule this test implements:
///
/// 1. the heading as rendered text: inline code keeps its content without
///    the backticks, a link `[text](url)` keeps its text, `*` (emphasis)
///    goes; a closing run of `#` goes;
/// 2. lowercased;
/// 3. every character that is not a letter, a digit, `_`, `-` or a space is
///    dropped (so `.`, `/`, `(`, `:` and backticks vanish);
/// 4. each space becomes `-` (no collapsing: `a / b` gives `a--b`);
/// 5. a heading whose slug is already taken in the file gets `-1`, `-2`, ...
///
/// `_` is kept as text, so headings in the guide do not use `_emphasis_`.
fn slug(heading: &str) -> String {
    let text = render_inline(heading);
    let mut slug = String::new();
    for c in text.trim().to_lowercase().chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            slug.push(c);
        } else if c == ' ' {
            slug.push('-');
        }
    }
    slug
}

/// Inline markdown as text: backticks and `*` dropped, links as their text.
fn render_inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '[' {
            if let Some(close) = rest.find("](") {
                if let Some(end) = rest[close..].find(')') {
                    out.push_str(&render_inline(&rest[1..close]));
                    rest = &rest[close + end + 1..];
                    continue;
                }
            }
        }
        if c != '`' && c != '*' {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A line with inline code spans blanked out, so `[x](y)` inside code is no link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let fence = &rest[start..start + ticks];
        match rest[start + ticks..].find(fence) {
            Some(len) => {
                out.push_str(&" ".repeat(ticks * 2 + len));
                rest = &rest[start + ticks * 2 + len..];
            }
            None => {
                // An unmatched backtick is literal text.
                out.push_str(fence);
                rest = &rest[start + ticks..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An opening or closing code fence: the fence character and its length.
fn fence(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let trimmed = &line[indent..];
    let c = trimmed.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = trimmed.chars().take_while(|x| *x == c).count();
    (n >= 3).then_some((c, n))
}

fn parse_markdown(text: &str) -> Markdown {
    let mut md = Markdown::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut open_fence: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some((c, n)) = open_fence {
            if fence(line).is_some_and(|(c2, n2)| c2 == c && n2 >= n)
                && line.trim_start().trim_start_matches(c).trim().is_empty()
            {
                open_fence = None;
            }
            continue;
        }
        if let Some(f) = fence(line) {
            open_fence = Some(f);
            continue;
        }
        let trimmed = line.trim_start_matches(' ');
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&level)
            && line.len() - trimmed.len() <= 3
            && (trimmed.len() == level || trimmed[level..].starts_with(' '))
        {
            let heading = trimmed[level..].trim().trim_end_matches('#').trim_end();
            let base = slug(heading);
            let n = seen.entry(base.clone()).or_insert(0);
            let anchor = if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            *n += 1;
            md.anchors.insert(anchor);
        }
        let plain = without_code_spans(line);
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            // The target runs to the `)` that balances the `(`.
            let mut depth = 1;
            let mut end = None;
            for (j, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else { break };
            let target = after[..end].trim();
            let target = target
                .strip_prefix('<')
                .and_then(|t| t.split_once('>').map(|(t, _)| t))
                .unwrap_or_else(|| target.split_whitespace().next().unwrap_or(""));
            md.links.push((i + 1, target.to_owned()));
            rest = &after[end..];
        }
    }
    md
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether a link target is external (has a URL scheme: `https:`, `mailto:`).
fn is_external(target: &str) -> bool {
    match target.find(':') {
        Some(colon) => !target[..colon].contains(['/', '#', '.']) && colon > 0,
        None => false,
    }
}

/// Every broken relative link in `files`, as `file:line: target: why`.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut parsed = BTreeMap::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        parsed.insert(normalize(file), parse_markdown(&text));
    }
    let mut broken = Vec::new();
    for (file, md) in &parsed {
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, target) in &md.links {
            let mut fail = |why: String| broken.push(format!("{shown}:{line}: ({target}): {why}"));
            if target.is_empty() {
                fail("empty link".into());
                continue;
            }
            if is_external(target) {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else if let Some(from_root) = path.strip_prefix('/') {
                normalize(&root.join(from_root))
            } else {
                normalize(&file.parent().unwrap().join(path))
            };
            if !resolved.starts_with(root) {
                fail("points outside the repository".into());
                continue;
            }
            if !resolved.exists() {
                fail(format!("no such file: {}", resolved.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if resolved.extension().is_none_or(|x| x != "md") {
                continue; // anchors into source files (`#L10`) are not checked
            }
            let anchors = match parsed.get(&resolved) {
                Some(md) => md.anchors.clone(),
                None => {
                    let text = std::fs::read_to_string(&resolved).unwrap();
                    parse_markdown(&text).anchors
                }
            };
            if !anchors.contains(anchor) {
                fail(format!(
                    "no heading with anchor #{anchor} in {} (it has: {})",
                    resolved.strip_prefix(root).unwrap_or(&resolved).display(),
                    anchors.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    broken
}

#[test]
fn relative_links_resolve() {
    let root = root();
    let files = markdown_files();
    assert!(files.len() >= 5, "the guide is missing: {files:?}");
    let broken = broken_links(&root, &files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The link checker itself: slugs as GitHub makes them, links found outside
/// code only, and a broken link and a broken anchor reported.
#[test]
fn the_link_checker_finds_broken_links() {
    assert_eq!(
        slug("`distlock hold`: a fleet-wide flock(1)"),
        "distlock-hold-a-fleet-wide-flock1"
    );
    assert_eq!(
        slug("A paused etcd leader can take a lock early (etcd before 3.4.28 / 3.5.11)"),
        "a-paused-etcd-leader-can-take-a-lock-early-etcd-before-3428--3511"
    );
    assert_eq!(
        slug("`cargo bench -p distlock-tests --bench lock_latency`"),
        "cargo-bench--p-distlock-tests---bench-lock_latency"
    );
    assert_eq!(slug("See [the core](core.md) *now*"), "see-the-core-now");

    let md = parse_markdown(
        "# Title\n\n## Title\n\n[a](x.md#y) `[b](not-a-link)` [c](<sp ace.md> \"t\")\n\
         ```sh\n# not a heading [d](nor-a-link)\n```\n[e](https://example.invalid/)\n",
    );
    assert_eq!(
        md.anchors,
        BTreeSet::from(["title".to_owned(), "title-1".to_owned()])
    );
    let targets: Vec<_> = md.links.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(targets, ["x.md#y", "sp ace.md", "https://example.invalid/"]);

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("a.md"), "# A\n\n## Part one\n").unwrap();
    std::fs::write(
        root.join("b.md"),
        "[ok](a.md#part-one) [ok](#b) [ok](https://x.invalid)\n# B\n\
         [gone](missing.md) [no anchor](a.md#part-two) [out](../../etc/passwd)\n",
    )
    .unwrap();
    let broken = broken_links(&root, &[root.join("a.md"), root.join("b.md")]);
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(broken[0].contains("missing.md"), "{broken:#?}");
    assert!(broken[1].contains("#part-two"), "{broken:#?}");
    assert!(broken[2].contains("outside"), "{broken:#?}");
}

// ----------------------------------------------------------- metrics ---

/// Every public metric name of distlock.
const METRICS: [&str; 13] = [
    ACQUISITIONS,
    RELEASES,
    LOSSES,
    RENEW_FAILURES,
    WAIT_SECONDS,
    HOLD_SECONDS,
    HANDOFF_SECONDS,
    HELD_LOCKS,
    WAITERS,
    SESSIONS,
    LEADERS,
    LEADER_TRANSITIONS,
    LEADER_SECONDS,
];

/// Labels Prometheus adds to every series it scrapes (the target's), which
/// the dashboard may select and group by although the code never sets them.
const SCRAPE_LABELS: [&str; 2] = ["job", "instance"];

/// What the code records: per metric name, its kind and every label name.
type Recorded = BTreeMap<String, (MetricKind, BTreeSet<String>)>;

/// Runs every recording path once, in memory, under a debugging recorder:
/// an acquisition, a waiter woken by a hand-off, releases, a hold lost to a
/// force-unlock, a keep-alive that fails, sessions; on a manager with
/// `with_metric_names(true)`, so the opt-in `name` label is seen too.
fn recorded() -> Recorded {
    let recorder = DebuggingRecorder::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let manager = LockManager::in_memory().with_metric_names(true);
            let lock = Arc::new(manager.new_lock("docs", LockOptions::default()).unwrap());
            let guard = lock.lock().await.unwrap();
            let other = Arc::clone(&lock);
            let waiter = tokio::spawn(async move {
                // Another task: another owner, which waits (a waiter), then
                // is handed the lock.
                other.lock().await.unwrap().unlock().await.unwrap();
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            guard.unlock().await.unwrap();
            waiter.await.unwrap();

            // A hold lost while held: force-unlocked.
            let lost = manager
                .new_lock("docs-lost", LockOptions::default())
                .unwrap();
            let guard = lost.lock().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(manager.force_unlock("docs-lost").await.unwrap());
            tokio::time::timeout(Duration::from_secs(5), guard.lost())
                .await
                .expect("a force-unlocked hold is lost");
            drop(guard);

            // A keep-alive that fails.
            let faults = Faults::new();
            let faulty = manager.with_faults(&faults);
            let renewing = faulty
                .new_lock("docs-renew", LockOptions::default())
                .unwrap();
            let guard = renewing.lock().await.unwrap();
            faults.always(Op::KeepAlive, Fault::Fail);
            assert!(
                guard.renew().await.is_err(),
                "the keep-alive was made to fail"
            );
            faults.heal();
            guard.unlock().await.unwrap();

            // A leadership, resigned.
            let election = manager
                .new_election("docs-election", LockOptions::default())
                .unwrap();
            election
                .campaign("a")
                .await
                .unwrap()
                .resign()
                .await
                .unwrap();

            faulty.close().await;
            manager.close().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
    });
    let mut out = Recorded::new();
    for (key, _, _, _) in recorder.snapshotter().snapshot().into_vec() {
        let entry = out
            .entry(key.key().name().to_owned())
            .or_insert_with(|| (key.kind(), BTreeSet::new()));
        assert_eq!(
            entry.0,
            key.kind(),
            "{} recorded as two kinds",
            key.key().name()
        );
        entry
            .1
            .extend(key.key().labels().map(|l| l.key().to_owned()));
    }
    out
}

/// One series selector in a PromQL expression: `name{label op "value", ...}`.
#[derive(Debug, PartialEq)]
struct Selector {
    metric: String,
    labels: Vec<String>,
}

/// What a PromQL expression uses: its selectors, and the labels named in
/// `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` and as
/// `label_values(metric, LABEL)`'s second argument.
#[derive(Debug, Default, PartialEq)]
struct Uses {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    Other,
}

fn tokenize(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            // A string: skipped (its escapes too).
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            toks.push(Tok::Other);
        } else if c == '[' {
            // A range or subquery duration (`[5m]`, `[$__rate_interval]`).
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            toks.push(Tok::Other);
        } else if c == '$' {
            // A Grafana variable outside a string.
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                i += 1;
            }
            toks.push(Tok::Other);
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            toks.push(Tok::Other);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Words that are not metric names: binary operators, modifiers, and the
/// aggregation operators (which may take `by (..)` before their `(`).
const KEYWORDS: [&str; 21] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metrics and labels a PromQL expression (or a Grafana
/// `label_values(...)` variable query) uses.
fn promql_uses(expr: &str) -> Uses {
    let toks = tokenize(expr);
    let mut uses = Uses::default();
    let mut i = 0;
    // Set while inside `label_values(`: the depth of its parentheses.
    let mut label_values_depth: Option<usize> = None;
    let mut depth = 0;
    while i < toks.len() {
        let next = toks.get(i + 1);
        match &toks[i] {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                if label_values_depth == Some(depth) {
                    label_values_depth = None;
                }
                depth -= 1;
            }
            Tok::Ident(word)
                if GROUPING.contains(&word.to_lowercase().as_str())
                    && next == Some(&Tok::Punct('(')) =>
            {
                i += 2;
                while i < toks.len() && toks[i] != Tok::Punct(')') {
                    if let Tok::Ident(label) = &toks[i] {
                        uses.grouping.push(label.clone());
                    }
                    i += 1;
                }
            }
            Tok::Ident(word) if KEYWORDS.contains(&word.to_lowercase().as_str()) => {}
            Tok::Ident(word) if word == "label_values" && next == Some(&Tok::Punct('(')) => {
                label_values_depth = Some(depth + 1);
            }
            Tok::Ident(_) if next == Some(&Tok::Punct('(')) => {} // a function
            Tok::Ident(word)
                if label_values_depth == Some(depth)
                    && matches!(toks.get(i.wrapping_sub(1)), Some(Tok::Punct(','))) =>
            {
                uses.grouping.push(word.clone()); // label_values(metric, LABEL)
            }
            Tok::Ident(word) => {
                let mut selector = Selector {
                    metric: word.clone(),
                    labels: Vec::new(),
                };
                if next == Some(&Tok::Punct('{')) {
                    i += 2;
                    let mut expect_label = true;
                    while i < toks.len() && toks[i] != Tok::Punct('}') {
                        match &toks[i] {
                            Tok::Ident(label) if expect_label => {
                                selector.labels.push(label.clone());
                                expect_label = false;
                            }
                            Tok::Punct(',') => expect_label = true,
                            _ => {}
                        }
                        i += 1;
                    }
                }
                uses.selectors.push(selector);
            }
            Tok::Punct('{') => {
                // A selector without a metric name: recorded as such, and refused.
                uses.selectors.push(Selector {
                    metric: String::new(),
                    labels: Vec::new(),
                });
                while i < toks.len() && toks[i] != Tok::Punct('}') {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    uses
}

/// Every PromQL string in a dashboard: the panels' (and rows' panels')
/// `targets[].expr`, and the `query` of its query variables.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels(list: &serde_json::Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_owned());
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let query = &var["query"];
            match query.as_str().or_else(|| query["query"].as_str()) {
                Some(q) => out.push(q.to_owned()),
                None => panic!("variable {} has no query", var["name"]),
            }
        }
    }
    out
}

/// Every problem with the dashboard's queries, against what the code records.
fn dashboard_problems(queries: &[String], recorded: &Recorded) -> Vec<String> {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for query in queries {
        let uses = promql_uses(query);
        if uses.selectors.is_empty() {
            problems.push(format!("{query}: queries no metric"));
        }
        // The labels a `by (...)` may name: those of every series in the query.
        let mut common: Option<BTreeSet<String>> = None;
        for selector in &uses.selectors {
            let name = selector.metric.as_str();
            let histogram_series = ["_bucket", "_sum", "_count"]
                .into_iter()
                .find_map(|suffix| Some((name.strip_suffix(suffix)?, suffix)));
            let (base, suffix) = if METRICS.contains(&name) {
                (name, None)
            } else if let Some((base, suffix)) = histogram_series {
                (base, Some(suffix))
            } else {
                problems.push(format!(
                    "{query}: `{name}` is not one of distlock::metrics' constants"
                ));
                continue;
            };
            if !METRICS.contains(&base) {
                problems.push(format!(
                    "{query}: `{name}` is not one of distlock::metrics' constants"
                ));
                continue;
            }
            let Some((kind, labels)) = recorded.get(base) else {
                problems.push(format!("{query}: `{base}` was never recorded"));
                continue;
            };
            match (kind, suffix) {
                (MetricKind::Histogram, None) => problems.push(format!(
                    "{query}: histogram `{base}` queried without _bucket/_sum/_count"
                )),
                (MetricKind::Counter | MetricKind::Gauge, Some(suffix)) => problems.push(format!(
                    "{query}: `{base}` is a {kind:?}, it has no `{suffix}` series"
                )),
                _ => {}
            }
            used.insert(base.to_owned());
            let mut allowed: BTreeSet<String> = labels.clone();
            allowed.extend(SCRAPE_LABELS.map(String::from));
            if suffix == Some("_bucket") {
                allowed.insert("le".to_owned());
            }
            for label in &selector.labels {
                if !allowed.contains(label) {
                    problems.push(format!(
                        "{query}: `{base}` has no label `{label}` (the code sets {labels:?})"
                    ));
                }
            }
            common = Some(match common {
                None => allowed,
                Some(c) => c.intersection(&allowed).cloned().collect(),
            });
        }
        let common = common.unwrap_or_default();
        for label in &uses.grouping {
            if !common.contains(label) {
                problems.push(format!(
                    "{query}: groups by `{label}`, which not every series in it has ({common:?})"
                ));
            }
        }
    }
    for metric in METRICS {
        if !used.contains(metric) {
            problems.push(format!("no panel shows `{metric}`"));
        }
    }
    problems
}

#[test]
fn the_dashboard_queries_what_the_code_records() {
    let recorded = recorded();
    // The scenario must reach every metric, or a label check would be moot.
    for metric in METRICS {
        assert!(
            recorded.contains_key(metric),
            "the scenario did not record {metric}: {recorded:?}"
        );
    }
    for name in recorded.keys() {
        assert!(
            METRICS.contains(&name.as_str()),
            "{name} is recorded but not in this test's list of constants"
        );
    }

    let path = root().join("docs/grafana/distlock.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= METRICS.len(), "{queries:#?}");

    let problems = dashboard_problems(&queries, &recorded);
    assert!(
        problems.is_empty(),
        "docs/grafana/distlock.json:\n{}",
        problems.join("\n")
    );
}

/// The PromQL reading and the checks catch a wrong name, a wrong label, a
/// histogram used bare, and a grouping label the series lack.
#[test]
fn the_dashboard_check_finds_wrong_metrics_and_labels() {
    assert_eq!(
        promql_uses(
            r#"histogram_quantile(0.99, sum by (le, source) (rate(distlock_wait_seconds_bucket{job=~"$job", source=~"a,b"}[$__rate_interval])))"#
        ),
        Uses {
            selectors: vec![Selector {
                metric: "distlock_wait_seconds_bucket".into(),
                labels: vec!["job".into(), "source".into()],
            }],
            grouping: vec!["le".into(), "source".into()],
        }
    );
    assert_eq!(
        promql_uses(r#"label_values(distlock_acquisitions_total{job=~"$job"}, source)"#),
        Uses {
            selectors: vec![Selector {
                metric: "distlock_acquisitions_total".into(),
                labels: vec!["job".into()],
            }],
            grouping: vec!["source".into()],
        }
    );
    assert_eq!(
        promql_uses("sum(rate(distlock_losses_total[5m])) by (cause)").grouping,
        ["cause"]
    );

    let recorded: Recorded = [
        (ACQUISITIONS, MetricKind::Counter, &["source", "result"][..]),
        (
            WAIT_SECONDS,
            MetricKind::Histogram,
            &["source", "result"][..],
        ),
        (SESSIONS, MetricKind::Gauge, &[][..]),
    ]
    .into_iter()
    .map(|(m, k, l)| (m.to_owned(), (k, l.iter().map(|s| s.to_string()).collect())))
    .collect();
    let check = |q: &str| dashboard_problems(&[q.to_owned()], &recorded);
    let only_missing_panels = |p: Vec<String>| -> Vec<String> {
        p.into_iter()
            .filter(|x| !x.starts_with("no panel"))
            .collect()
    };
    assert_eq!(
        only_missing_panels(check(
            "sum by (result) (rate(distlock_acquisitions_total[1m]))"
        )),
        Vec::<String>::new()
    );
    for bad in [
        "sum by (result) (rate(distlock_acquisitions_totl[1m]))",
        "sum by (cause) (rate(distlock_acquisitions_total[1m]))",
        r#"rate(distlock_acquisitions_total{reason="x"}[1m])"#,
        "distlock_wait_seconds",
        "rate(distlock_acquisitions_total_bucket[1m])",
        "sum by (instance, le) (distlock_sessions)",
        "sum(up)",
    ] {
        assert!(
            !only_missing_panels(check(bad)).is_empty(),
            "{bad} was accepted"
        );
    }
}
