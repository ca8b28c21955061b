//! Reading a Prometheus text exposition (format 0.0.4) strictly: every
//! line must be a comment, blank, or a sample `name{label="value",…} value
//! [timestamp]`, so a scrape that parses is well-formed, and tests assert
//! on metric names, labels and values instead of substrings.

use std::collections::{BTreeMap, HashMap};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with its `_bucket`/`_sum`/`_count` suffix, if any).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape: the samples and the `# TYPE` of each metric family.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// `# TYPE` lines: family name to `counter`, `gauge`, `histogram`, ….
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// Parses `text`; `Err` names the first line that is not valid.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut scrape = Self::default();
        for (n, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE") {
                    let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next())
                    else {
                        return Err(bad("a TYPE line is `# TYPE name kind`"));
                    };
                    scrape.types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            scrape
                .samples
                .push(parse_sample(line).map_err(|why| bad(&why))?);
        }
        Ok(scrape)
    }

    /// The samples named `name` whose labels include every pair of
    /// `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of [`find`](Self::find)'s values; `None` when no sample
    /// matches.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matched = self.find(name, labels).peekable();
        matched.peek()?;
        Some(matched.map(|s| s.value).sum())
    }

    /// The `# TYPE` of the family `name`.
    pub fn kind(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    if end == 0 {
        return Err("no metric name".to_owned());
    }
    let name = line[..end].to_owned();
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without `=`")?;
            let key = &rest[..eq];
            if key.is_empty()
                || !key
                    .chars()
                    .enumerate()
                    .all(|(i, c)| is_name_char(c, i == 0))
            {
                return Err(format!("bad label name {key:?}"));
            }
            let quoted = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("a label value is quoted")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let close = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err("a bad escape in a label value".to_owned()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value".to_owned()),
                }
            };
            labels.insert(key.to_owned(), value);
            rest = &quoted[close + 1..];
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".to_owned());
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_labels_and_types_and_refuses_garbage() {
        let text = "# HELP x_total Things.\n# TYPE x_total counter\nx_total{route=\"a\",why=\"say \\\"hi\\\"\"} 3\nx_total{route=\"b\"} 4\n\nh_bucket{le=\"+Inf\"} 2\nup 1 1700000000\n";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(s.kind("x_total"), Some("counter"));
        assert_eq!(s.sum("x_total", &[]), Some(7.0));
        assert_eq!(s.sum("x_total", &[("route", "a")]), Some(3.0));
        assert_eq!(
            s.find("x_total", &[("route", "a")]).next().unwrap().labels["why"],
            "say \"hi\""
        );
        assert_eq!(s.sum("h_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(s.sum("nothing", &[]), None);
        for bad in [
            "x_total{route=\"a\" 3",
            "x_total{route=a} 3",
            "x_total three",
            "{route=\"a\"} 3",
            "x_total 3 4 5",
        ] {
            assert!(Scrape::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
