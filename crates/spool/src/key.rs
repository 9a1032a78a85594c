use time::OffsetDateTime;

use crate::Error;

/// A parsed object key template such as `{site}/{camera}/{date}/{name}`.
///
/// Rendering cannot escape the template's prefix: placeholder values never contain `/`, and a
/// rendered key with an empty, `.` or `..` segment is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    template: String,
    site: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Site,
    Camera,
    Date,
    Hour,
    Name,
}

impl KeyTemplate {
    /// Parses a template for a site.
    pub fn parse(template: &str, site: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::KeyTemplate {
            template: template.to_owned(),
            reason: reason.to_owned(),
        };
        if template.starts_with('/') {
            return Err(bad("must not start with '/'"));
        }
        if site.is_empty() || site.contains('/') || site == "." || site == ".." {
            return Err(bad(
                "site name must be non-empty, without '/', and not '.' or '..'",
            ));
        }
        let mut pieces = Vec::new();
        let mut rest = template;
        let mut has_name = false;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or_else(|| bad("unclosed '{'"))? + open;
            let piece = match &rest[open + 1..close] {
                "site" => Piece::Site,
                "camera" => Piece::Camera,
                "date" => Piece::Date,
                "hour" => Piece::Hour,
                "name" => {
                    has_name = true;
                    Piece::Name
                }
                other => {
                    return Err(bad(&format!(
                        "unknown placeholder {{{other}}}; use site, camera, date, hour or name"
                    )));
                }
            };
            pieces.push(piece);
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        if pieces
            .iter()
            .any(|p| matches!(p, Piece::Literal(l) if l.contains('}')))
        {
            return Err(bad("unmatched '}'"));
        }
        if !has_name {
            return Err(bad(
                "must contain {name}, or two chunks would share one key",
            ));
        }
        for seg in template.split('/') {
            if seg == "." || seg == ".." {
                return Err(bad("must not contain '.' or '..' segments"));
            }
        }
        Ok(Self {
            template: template.to_owned(),
            site: site.to_owned(),
            pieces,
        })
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// Renders the key of a chunk `name` from `camera`, recorded at `mtime` (Unix nanoseconds).
    pub fn render(&self, camera: &str, name: &str, mtime_ns: i128) -> Result<String, Error> {
        let at = OffsetDateTime::from_unix_timestamp_nanos(mtime_ns)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut key = String::new();
        for p in &self.pieces {
            match p {
                Piece::Literal(l) => key.push_str(l),
                Piece::Site => key.push_str(&self.site),
                Piece::Camera => key.push_str(camera),
                Piece::Date => key.push_str(&format!(
                    "{:04}-{:02}-{:02}",
                    at.year(),
                    u8::from(at.month()),
                    at.day()
                )),
                Piece::Hour => key.push_str(&format!("{:02}", at.hour())),
                Piece::Name => key.push_str(name),
            }
        }
        let unsafe_key = |reason| Error::UnsafeKey {
            name: name.to_owned(),
            key: key.clone(),
            reason,
        };
        if camera.contains('/') || name.contains('/') || name.contains('\0') {
            return Err(unsafe_key("a placeholder value contains '/' or NUL"));
        }
        if key.len() > 1024 {
            return Err(unsafe_key("longer than S3's 1024-byte key limit"));
        }
        if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(unsafe_key("it has an empty, '.' or '..' segment"));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i128 = 1_762_935_300_000_000_000; // 2025-11-12T08:15:00Z

    #[test]
    fn renders_default_template() {
        let t = KeyTemplate::parse("{site}/{camera}/{date}/{name}", "SITE-2847").unwrap();
        assert_eq!(
            t.render("cam1", "0815.mp4", T).unwrap(),
            "SITE-2847/cam1/2025-11-12/0815.mp4"
        );
        assert_eq!(
            t.render("cam 1", "Tür ü.mp4", T).unwrap(),
            "SITE-2847/cam 1/2025-11-12/Tür ü.mp4"
        );
        let h = KeyTemplate::parse("video/{date}/{hour}/{camera}-{name}", "s").unwrap();
        assert_eq!(h.render("c", "n", T).unwrap(), "video/2025-11-12/08/c-n");
    }

    #[test]
    fn cannot_escape_prefix() {
        let t = KeyTemplate::parse("{site}/{camera}/{name}", "s").unwrap();
        assert!(t.render("..", "x", T).is_err());
        assert!(t.render("c", "..", T).is_err());
        assert!(t.render("c", "a/../../b", T).is_err());
        assert!(t.render("", "x", T).is_err());
        assert!(t.render("c", "a..b.mp4", T).is_ok());
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "/{name}",
            "{site}/../{name}",
            "{site}/{cam}/{name}",
            "{site}",
            "{name",
            "a}{name}",
        ] {
            assert!(KeyTemplate::parse(bad, "s").is_err(), "{bad}");
        }
        assert!(KeyTemplate::parse("{name}", "a/b").is_err());
    }
}
