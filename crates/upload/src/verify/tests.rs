use md5::{Digest, Md5};

use super::*;
use crate::chunk::composite_crc32c;

const VALIDATING: StoreProfile = StoreProfile {
    conditional_writes: true,
    put_checksum_validated: true,
    part_checksum_validated: true,
    md5_etags: false,
};
/// moto: validates nothing, MD5 ETags.
const TRUSTING: StoreProfile = StoreProfile {
    put_checksum_validated: false,
    part_checksum_validated: false,
    md5_etags: true,
    ..VALIDATING
};
/// An SSE-KMS-style gateway that validates nothing: no HeadObject proves anything.
const OPAQUE: StoreProfile = StoreProfile {
    md5_etags: false,
    ..TRUSTING
};

fn head(size: u64, etag: &str, crc32c: Option<&str>) -> ObjectHead {
    ObjectHead {
        size,
        etag: etag.into(),
        crc32c: crc32c.map(str::to_owned),
    }
}

#[test]
fn a_single_object_is_proven_only_by_a_checksum_the_store_computed() {
    let crc = b64(crc32c::crc32c(b"chunk"));
    let md5: [u8; 16] = Md5::digest(b"chunk").into();
    let with_md5 = Expected::Single {
        crc: &crc,
        md5: Some(md5),
    };
    let without = Expected::Single {
        crc: &crc,
        md5: None,
    };
    let h = |etag: &str, c: Option<&str>| head(5, etag, c);
    assert_eq!(
        judge_head(&VALIDATING, 5, &h("x", Some(&crc)), &without),
        Verdict::Proven(HeadProof::Crc32c)
    );
    // A store that does not validate may echo whatever CRC32C it was sent.
    assert!(matches!(
        judge_head(&TRUSTING, 5, &h("x", Some(&crc)), &without),
        Verdict::Unproven(_)
    ));
    assert_eq!(
        judge_head(&TRUSTING, 5, &h(&hex_md5(&md5), Some(&crc)), &with_md5),
        Verdict::Proven(HeadProof::Md5Etag)
    );
    // Opaque or truncated ETags, no validated CRC32C: size alone proves nothing.
    for etag in [
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9aabbccdd",
        "0a1b2c3d4e5f6071",
        "",
    ] {
        assert!(matches!(
            judge_head(&OPAQUE, 5, &h(etag, None), &with_md5),
            Verdict::Unproven(_)
        ));
    }
    // The CRC32C header was stripped on the way: validation never happened.
    assert!(matches!(
        judge_head(&VALIDATING, 5, &h("x", None), &without),
        Verdict::Unproven(_)
    ));
    assert!(matches!(
        judge_head(&TRUSTING, 5, &h(&hex_md5(&[0; 16]), None), &with_md5),
        Verdict::Wrong(_)
    ));
    assert!(matches!(
        judge_head(&VALIDATING, 5, &h("x", Some("AAAAAA==")), &without),
        Verdict::Wrong(_)
    ));
    assert!(matches!(
        judge_head(&VALIDATING, 4, &h("x", Some(&crc)), &without),
        Verdict::Wrong(_)
    ));
}

#[test]
fn a_multipart_object_is_proven_by_validated_parts_or_md5_part_etags_only() {
    let part = |n: u32, data: &[u8], etag: String| PartRecord {
        number: n,
        offset: u64::from(n - 1) * 2,
        size: data.len() as u64,
        etag,
        crc32c: b64(crc32c::crc32c(data)),
    };
    let md5 = |d: &[u8]| hex_md5(&Md5::digest(d).into());
    let parts = [part(1, b"ab", md5(b"ab")), part(2, b"c", md5(b"c"))];
    let crcs: Vec<String> = parts.iter().map(|p| p.crc32c.clone()).collect();
    let composite = composite_crc32c(&crcs).unwrap();
    let etags: Vec<String> = parts.iter().map(|p| p.etag.clone()).collect();
    let etag = multipart_etag(&etags).unwrap();
    let expected = Expected::Multipart {
        parts: &parts,
        composite: &composite,
    };
    assert_eq!(
        judge_head(
            &VALIDATING,
            3,
            &head(3, "kms-opaque", Some(&composite)),
            &expected
        ),
        Verdict::Proven(HeadProof::CompositeCrc32c)
    );
    assert_eq!(
        judge_head(&TRUSTING, 3, &head(3, &etag, None), &expected),
        Verdict::Proven(HeadProof::MultipartEtag)
    );
    // An echoed composite from a store that validated no part proves nothing.
    assert!(matches!(
        judge_head(
            &OPAQUE,
            3,
            &head(3, "kms-opaque-2", Some(&composite)),
            &expected
        ),
        Verdict::Unproven(_)
    ));
    // The same object behind a gateway with opaque ETags: not wrong, just unproven.
    assert!(matches!(
        judge_head(
            &OPAQUE,
            3,
            &head(3, &format!("{}c0ffee00-2", &etag[..32]), None),
            &expected
        ),
        Verdict::Unproven(_)
    ));
    let opaque_parts = [
        part(1, b"ab", "0a1b2c3d4e5f6071".into()),
        part(2, b"c", "8293a4b5c6d7e8f9".into()),
    ];
    let opaque = Expected::Multipart {
        parts: &opaque_parts,
        composite: &composite,
    };
    assert!(matches!(
        judge_head(&OPAQUE, 3, &head(3, "feedface-2", None), &opaque),
        Verdict::Unproven(_)
    ));
    assert!(matches!(
        judge_head(
            &TRUSTING,
            3,
            &head(3, &format!("{}-2", "0".repeat(32)), None),
            &expected
        ),
        Verdict::Wrong(_)
    ));
    assert!(matches!(
        judge_head(&TRUSTING, 3, &head(2, &etag, None), &expected),
        Verdict::Wrong(_)
    ));
}

#[test]
fn single_objects_are_read_back_a_part_at_a_time() {
    assert_eq!(ranges(0, 4), vec![]);
    assert_eq!(ranges(4, 4), vec![(0, 4)]);
    assert_eq!(ranges(9, 4), vec![(0, 4), (4, 4), (8, 1)]);
    // The CRC32C of the whole is the pieces' combined.
    let data = b"backhaul read-back";
    let whole = ranges(data.len() as u64, 5).iter().fold(0, |acc, &(o, l)| {
        crc32c::crc32c_combine(
            acc,
            crc32c::crc32c(&data[o as usize..(o + l) as usize]),
            l as usize,
        )
    });
    assert_eq!(whole, crc32c::crc32c(data));
}
