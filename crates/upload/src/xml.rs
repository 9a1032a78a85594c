//! The few S3 XML responses we read, parsed with quick-xml into a flat list of
//! (element path, text) pairs. S3 responses are small and shallow; a typed serde mapping per
//! response would be more code for the same result.

use quick_xml::Reader;
use quick_xml::events::Event;

/// `(path, text)` for every text node, path joined with `/` (namespaces stripped).
pub fn leaves(xml: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut reader = Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    // Text arrives in pieces split at entity references; joined until the element ends.
    let mut text: Option<String> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Text(t) => {
                let piece = t.decode().map_err(|e| e.to_string())?;
                text.get_or_insert_with(String::new).push_str(&piece);
            }
            Event::GeneralRef(r) => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let ch = match name.as_str() {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    n => n
                        .strip_prefix("#x")
                        .map(|h| u32::from_str_radix(h, 16))
                        .or_else(|| n.strip_prefix('#').map(str::parse))
                        .and_then(Result::ok)
                        .and_then(char::from_u32),
                };
                let ch = ch.ok_or_else(|| format!("unknown XML entity &{name};"))?;
                text.get_or_insert_with(String::new).push(ch);
            }
            other => {
                // Whitespace between elements is layout, not content.
                if let Some(t) = text.take().filter(|t| !t.trim().is_empty()) {
                    out.push((path.join("/"), t.trim().to_owned()));
                }
                match other {
                    Event::Start(e) => {
                        path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                    }
                    Event::End(_) => {
                        path.pop();
                    }
                    Event::Empty(e) => {
                        let mut p = path.join("/");
                        if !p.is_empty() {
                            p.push('/');
                        }
                        p.push_str(&String::from_utf8_lossy(e.local_name().as_ref()));
                        out.push((p, String::new()));
                    }
                    Event::Eof => break,
                    _ => {}
                }
            }
        }
        buf.clear();
    }
    Ok(out)
}

/// The text of the first element at `path`.
pub fn first<'a>(leaves: &'a [(String, String)], path: &str) -> Option<&'a str> {
    leaves
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, t)| t.as_str())
}

/// `(Code, Message)` of an S3 `<Error>` body; empty strings when absent or unreadable.
pub fn error_code(body: &[u8]) -> (String, String) {
    let Ok(l) = leaves(body) else {
        return (String::new(), String::new());
    };
    (
        first(&l, "Error/Code").unwrap_or_default().to_owned(),
        first(&l, "Error/Message").unwrap_or_default().to_owned(),
    )
}

/// Groups repeated elements: the `prefix/<child>` leaves in order, a new record starting
/// whenever a child repeats. Stores order children differently (moto puts `UploadId` before
/// `Key`), so no child is assumed to come first.
pub fn records(leaves: &[(String, String)], prefix: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for (p, t) in leaves {
        if let Some(child) = p.strip_prefix(prefix).and_then(|c| c.strip_prefix('/')) {
            if out
                .last()
                .is_none_or(|rec| rec.iter().any(|(c, _)| c == child))
            {
                out.push(Vec::new());
            }
            if let Some(rec) = out.last_mut() {
                rec.push((child.to_owned(), t.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_error_and_parts() {
        let err = br#"<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please &amp; reduce</Message></Error>"#;
        assert_eq!(
            error_code(err),
            ("SlowDown".into(), "Please & reduce".into())
        );
        let lp = br#"<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Bucket>b</Bucket><IsTruncated>false</IsTruncated>
            <Part><PartNumber>1</PartNumber><ETag>&quot;aa&quot;</ETag><Size>5</Size></Part>
            <Part><PartNumber>2</PartNumber><ETag>"bb"</ETag><Size>3</Size><ChecksumCRC32C>x==</ChecksumCRC32C></Part>
        </ListPartsResult>"#;
        let l = leaves(lp).unwrap();
        let parts = records(&l, "ListPartsResult/Part");
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            vec![
                ("PartNumber".into(), "1".into()),
                ("ETag".into(), "\"aa\"".into()),
                ("Size".into(), "5".into())
            ]
        );
        assert_eq!(parts[1][3], ("ChecksumCRC32C".into(), "x==".into()));
        // moto lists an upload's id before its key.
        let lu = br#"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>
            <Upload><UploadId>u1</UploadId><Key>k1</Key><Owner><ID>o</ID></Owner><Initiator><ID>i</ID></Initiator></Upload>
            <Upload><UploadId>u2</UploadId><Key>k2</Key></Upload></ListMultipartUploadsResult>"#;
        let l = leaves(lu).unwrap();
        let ups = records(&l, "ListMultipartUploadsResult/Upload");
        assert_eq!(ups.len(), 2);
        assert_eq!(
            ups[1][..2],
            [
                ("UploadId".into(), "u2".into()),
                ("Key".into(), "k2".into())
            ]
        );
        assert!(leaves(b"<a><b></a>").is_err());
    }
}
