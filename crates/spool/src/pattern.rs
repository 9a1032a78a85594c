/// A file-name glob with `*` (any run of characters) and `?` (one character).
///
/// Deliberately tiny: ignore patterns only ever match a single file name (`*.part`, `.*`), so a
/// full glob crate with path semantics and a regex engine would buy nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Wraps a pattern.
    pub fn new(p: impl Into<String>) -> Self {
        Self(p.into())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` (one path component) matches.
    pub fn matches(&self, name: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        let n: Vec<char> = name.chars().collect();
        // Iterative wildcard matching with one backtrack point: linear for the patterns we use.
        let (mut pi, mut ni) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
                pi += 1;
                ni += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ni));
                pi += 1;
            } else if let Some((sp, sn)) = star {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ignores() {
        let part = Pattern::new("*.part");
        let dot = Pattern::new(".*");
        assert!(part.matches("cam1-0001.mp4.part"));
        assert!(!part.matches("cam1-0001.mp4"));
        assert!(!part.matches("part"));
        assert!(dot.matches(".cam1.mp4.swp"));
        assert!(!dot.matches("cam1.mp4"));
        assert!(Pattern::new("cam?-*.tmp").matches("cam3-x.y.tmp"));
        assert!(!Pattern::new("cam?-*.tmp").matches("cam33-x.tmp.mp4"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("*ü*").matches("Kamera-Tür.mp4"));
    }
}
