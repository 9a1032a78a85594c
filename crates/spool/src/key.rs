use time::OffsetDateTime;

use crate::Error;

/// A parsed object key template such as `{site}/{camera}/{date}/{path}`.
///
/// Rendering cannot escape the template's prefix: only `{path}` may contain `/` (the chunk's
/// directories below its camera), and a rendered key with an empty, `.` or `..` segment is
/// refused.
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
    Path,
}

/// S3's limit on the length of an object key.
pub const MAX_KEY_BYTES: usize = 1024;

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
        if template.ends_with('/') {
            return Err(bad(
                "must not end with '/' (the key would end in an empty segment)",
            ));
        }
        if template.contains("//") {
            return Err(bad(
                "must not contain '//' (the key would have an empty segment)",
            ));
        }
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
                "path" => {
                    has_name = true;
                    Piece::Path
                }
                other => {
                    return Err(bad(&format!(
                        "unknown placeholder {{{other}}}; use site, camera, date, hour, path or name"
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
                "must contain {path} or {name}, or two chunks would share one key",
            ));
        }
        let literal_bytes: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(l) => l.len(),
                Piece::Site => site.len(),
                Piece::Date => 10,
                Piece::Hour => 2,
                _ => 1,
            })
            .sum();
        if literal_bytes > MAX_KEY_BYTES {
            return Err(bad(&format!(
                "renders keys of at least {literal_bytes} bytes; S3 allows {MAX_KEY_BYTES}"
            )));
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

    /// The fixed start of every key this template renders, up to its last `/` before the first
    /// placeholder other than `{site}` (`SITE-2847/` for the default). Listing this prefix
    /// finds the site's objects and multipart uploads and nothing of other sites'.
    pub fn site_prefix(&self) -> String {
        let mut prefix = String::new();
        for p in &self.pieces {
            match p {
                Piece::Literal(l) => prefix.push_str(l),
                Piece::Site => prefix.push_str(&self.site),
                _ => break,
            }
        }
        match prefix.rfind('/') {
            Some(i) => prefix[..=i].to_owned(),
            None => String::new(),
        }
    }

    /// Renders the key of a chunk at `path` below its `camera` directory, recorded at `mtime`
    /// (Unix nanoseconds). `{path}` is `path` itself; `{name}` its last segment.
    pub fn render(&self, camera: &str, path: &str, mtime_ns: i128) -> Result<String, Error> {
        let name = path.rsplit('/').next().unwrap_or(path);
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
                Piece::Path => key.push_str(path),
            }
        }
        let unsafe_key = |reason| Error::UnsafeKey {
            name: name.to_owned(),
            key: key.clone(),
            reason,
        };
        if camera.contains('/') || path.contains('\0') {
            return Err(unsafe_key("a placeholder value contains '/' or NUL"));
        }
        if path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(unsafe_key(
                "the chunk's path has an empty, '.' or '..' segment",
            ));
        }
        if key.len() > MAX_KEY_BYTES {
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

/// The `n`-th alternative of `key` for a chunk whose key is taken: `~n` before the last
/// segment's extension (`cam1/2025-11-12/0815.mp4` → `cam1/2025-11-12/0815~1.mp4`), or at the
/// end when it has none. Documented in `docs/specs/spool.md`.
pub fn disambiguate(key: &str, n: u32) -> String {
    let seg_start = key.rfind('/').map_or(0, |i| i + 1);
    match key[seg_start..].rfind('.') {
        Some(dot) if dot > 0 => {
            let at = seg_start + dot;
            format!("{}~{n}{}", &key[..at], &key[at..])
        }
        _ => format!("{key}~{n}"),
    }
}

/// The first alternative of `key` after the `after`-th that `taken` says is free, with its
/// number: the one search behind new chunks, the schema migration and a key taken in the bucket.
pub(crate) fn first_free<E>(
    key: &str,
    after: u32,
    mut taken: impl FnMut(&str) -> Result<bool, E>,
) -> Result<(String, u32), E> {
    let mut n = after + 1;
    loop {
        let alt = disambiguate(key, n);
        if !taken(&alt)? {
            return Ok((alt, n));
        }
        n += 1;
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
        assert!(t.render("c/d", "x", T).is_err());
        assert!(t.render("c", "a//b", T).is_err());
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
            "{site}//{name}",
            "{site}/{name}/",
            "{site}/{date}",
        ] {
            assert!(KeyTemplate::parse(bad, "s").is_err(), "{bad}");
        }
        assert!(KeyTemplate::parse("{name}", "a/b").is_err());
    }

    #[test]
    fn path_keeps_subdirectories_below_the_camera_apart() {
        let t = KeyTemplate::parse(crate::DEFAULT_KEY_TEMPLATE, "S").unwrap();
        let a = t.render("cam5", "a/same.mp4", T).unwrap();
        let b = t.render("cam5", "b/same.mp4", T).unwrap();
        assert_eq!(a, "S/cam5/2025-11-12/a/same.mp4");
        assert_ne!(a, b);
        let n = KeyTemplate::parse("{site}/{camera}/{name}", "S").unwrap();
        assert_eq!(
            n.render("cam5", "a/same.mp4", T).unwrap(),
            "S/cam5/same.mp4"
        );
    }

    #[test]
    fn overlong_templates_and_keys_are_refused() {
        let long = format!("{}/{{name}}", "x".repeat(1100));
        assert!(KeyTemplate::parse(&long, "s").is_err());
        let t = KeyTemplate::parse("{site}/{path}", "s").unwrap();
        assert!(t.render("c", &"y".repeat(1100), T).is_err());
    }

    #[test]
    fn site_prefix_and_disambiguation() {
        let t = KeyTemplate::parse(crate::DEFAULT_KEY_TEMPLATE, "SITE-2847").unwrap();
        assert_eq!(t.site_prefix(), "SITE-2847/");
        let t = KeyTemplate::parse("video/{site}-{camera}/{name}", "S").unwrap();
        assert_eq!(t.site_prefix(), "video/");
        assert_eq!(disambiguate("a/2025/0815.mp4", 1), "a/2025/0815~1.mp4");
        assert_eq!(disambiguate("a.b/0815", 2), "a.b/0815~2");
        assert_eq!(disambiguate("a/.hidden", 3), "a/.hidden~3");
    }
}
