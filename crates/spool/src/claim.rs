//! The chunk lifecycle as the uploader sees it: claim the next chunk, then report on the claim
//! (multipart begun, part done, upload forgotten, object key taken, failed, verified) until it
//! is verified and its file removed. Every step is one journal transition that checks the
//! state it starts from, so a step taken on a chunk that changed meanwhile is refused
//! ([`Error::Transition`]) instead of being applied to the new version.

use std::collections::HashSet;

use crate::remove::remove_verified;
use crate::watch::now_millis;
use crate::{
    AfterUpload, Backlog, Chunk, ChunkState, Error, PartRecord, PendingAbort, Removal, ScanEntry,
    Spool, scan,
};

impl Spool {
    /// Parts of the claimed chunk's open multipart upload that the journal holds.
    pub fn parts(&self, chunk: &Chunk) -> Result<Vec<PartRecord>, Error> {
        self.journal.parts(chunk.id)
    }

    /// The claimed chunk's multipart upload was created.
    pub fn begin_multipart(&self, chunk: &Chunk, upload_id: &str) -> Result<Chunk, Error> {
        self.journal.begin_multipart(chunk, upload_id)?;
        Ok(Chunk {
            state: ChunkState::Uploading,
            upload_id: Some(upload_id.to_owned()),
            ..chunk.clone()
        })
    }

    /// One part of upload `upload_id` was acknowledged by the store.
    pub fn record_part(
        &self,
        chunk: &Chunk,
        upload_id: &str,
        part: &PartRecord,
    ) -> Result<(), Error> {
        self.journal
            .record_part(chunk, upload_id, part, now_millis())
    }

    /// The store lost or refuses the chunk's upload: it starts over, the old one is aborted.
    pub fn forget_upload(&self, chunk: &Chunk) -> Result<Chunk, Error> {
        self.journal.forget_upload(chunk)?;
        Ok(Chunk {
            state: ChunkState::Discovered,
            upload_id: None,
            ..chunk.clone()
        })
    }

    /// The chunk's object key is taken in the bucket by different content: it moves to the
    /// first disambiguated key ([`crate::disambiguate`]) after `after` that no other live
    /// chunk holds, and the collision is counted. The caller checks the bucket for the new
    /// key in turn.
    pub fn rekey(&self, chunk: &Chunk, base: &str, after: u32) -> Result<(Chunk, u32), Error> {
        let (key, n) = crate::key::first_free(base, after, |k| self.journal.key_taken(k, chunk))?;
        self.journal.rekey(chunk, &key)?;
        self.metrics.key_collisions.inc();
        tracing::warn!(chunk = ?chunk.name, key = ?chunk.key, stored_as = ?key,
            "a different object already has this key in the bucket; stored under a disambiguated key, nothing overwritten");
        Ok((
            Chunk {
                key,
                ..chunk.clone()
            },
            n,
        ))
    }

    /// The object key the key template gives the chunk, before any disambiguation: the base
    /// that [`Self::rekey`] counts from when the chunk's key (maybe `~N` already) is taken.
    pub fn template_key(&self, chunk: &Chunk) -> Result<String, Error> {
        let (camera, file_name, name) = scan::split_name(std::path::Path::new(&chunk.name))
            .ok_or_else(|| Error::UnsafeKey {
                name: chunk.name.clone(),
                key: chunk.key.clone(),
                reason: "the journaled name is not a plain relative path",
            })?;
        self.key_of(&ScanEntry {
            name,
            camera,
            file_name,
            identity: chunk.identity,
        })
    }

    /// The chunk's object is in the bucket and matches what was read from the file: the chunk
    /// is marked verified (refused if the file changed meanwhile), then its file is deleted or
    /// retained, unless it changed or a writer still holds it.
    pub fn verified(&self, chunk: &Chunk, checksum: &str) -> Result<Removal, Error> {
        self.verified_many(&[(chunk.clone(), checksum.to_owned())])?
            .pop()
            .unwrap_or(Err(Error::UnknownChunk { id: chunk.id }))
    }

    /// [`Self::verified`] for chunks that finished together, with one journal commit for all
    /// of them before any file is touched and one after: each chunk's verified state is as
    /// durable before its file is deleted as with a commit of its own. Each chunk gets its
    /// own outcome; an error for the whole group is a journal that cannot be written.
    pub fn verified_many(
        &self,
        verified: &[(Chunk, String)],
    ) -> Result<Vec<Result<Removal, Error>>, Error> {
        let marked = self.journal.mark_verified_many(verified, now_millis())?;
        for ((chunk, _), mark) in verified.iter().zip(&marked) {
            if mark.is_ok() {
                self.settled(chunk.id);
            }
        }
        self.backlog_changed();
        let mut outcomes = Vec::with_capacity(verified.len());
        let mut to_finish: Vec<(usize, Chunk, ChunkState)> = Vec::new();
        for (i, ((chunk, checksum), mark)) in verified.iter().zip(marked).enumerate() {
            let chunk = Chunk {
                state: ChunkState::Verified,
                checksum: Some(checksum.clone()),
                ..chunk.clone()
            };
            outcomes.push(mark.and_then(|()| {
                let (outcome, finished) = self.remove_file(&chunk)?;
                if let Some(state) = finished {
                    to_finish.push((i, chunk, state));
                }
                Ok(outcome)
            }));
        }
        for state in [ChunkState::Removed, ChunkState::Retained] {
            let (at, group): (Vec<usize>, Vec<Chunk>) = to_finish
                .iter()
                .filter(|(_, _, s)| *s == state)
                .map(|(i, c, _)| (*i, c.clone()))
                .unzip();
            if group.is_empty() {
                continue;
            }
            // The files are handled and the rows verified: a row that cannot be finished now
            // is finished by the next `retry_removals`, which finds the file gone.
            match self.journal.finish_many(&group, state, now_millis()) {
                Ok(finished) => {
                    for (i, r) in at.into_iter().zip(finished) {
                        if let Err(e) = r {
                            outcomes[i] = Err(e);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, chunks = group.len(),
                        "journal: files handled but not yet recorded as such; recorded on the next removal round");
                }
            }
        }
        Ok(outcomes)
    }

    /// Retries the removal of every verified chunk whose file is still here (a crash between
    /// verify and delete, a writer that held it open). Cheap: verified rows are few.
    pub fn retry_removals(&self) -> Result<(), Error> {
        for c in self.journal.chunks_in(ChunkState::Verified)? {
            let removed = self
                .remove_file(&c)
                .and_then(|(_, finished)| match finished {
                    Some(state) => self.journal.finish(&c, state, now_millis()),
                    None => Ok(()),
                });
            if let Err(e) = removed {
                tracing::error!(chunk = ?c.name, error = %e, "could not remove verified chunk; will retry");
            }
        }
        Ok(())
    }

    /// Deletes or retains a verified chunk's file; the state its row moves to, if it does.
    fn remove_file(&self, chunk: &Chunk) -> Result<(Removal, Option<ChunkState>), Error> {
        let retain = match self.settings.after_upload {
            AfterUpload::Retain => self.settings.retain_dir.as_deref(),
            AfterUpload::Delete => None,
        };
        let outcome = remove_verified(&self.path_of(chunk), chunk, retain, |p| {
            self.being_written(p)
        })?;
        let state = match outcome {
            Removal::Retained => ChunkState::Retained,
            Removal::Deleted | Removal::AlreadyGone => ChunkState::Removed,
            Removal::Changed => {
                tracing::warn!(chunk = ?chunk.name, "file changed after verification; kept, the new version is uploaded too");
                return Ok((outcome, None));
            }
            Removal::InUse => {
                tracing::warn!(chunk = ?chunk.name, "verified, but a process still has the file open for writing; kept until it is done");
                return Ok((outcome, None));
            }
        };
        tracing::debug!(chunk = ?chunk.name, outcome = ?outcome, "chunk file handled");
        Ok((outcome, Some(state)))
    }

    /// Re-reads a claimed chunk's file after the uploader saw it change or vanish: a vanished
    /// file is `gone` (reported), a changed one starts over as a new version.
    pub fn changed(&self, chunk: &Chunk) -> Result<(), Error> {
        self.settled(chunk.id);
        self.backlog_changed();
        let path = self.path_of(chunk);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::error!(chunk = ?chunk.name, "chunk vanished while uploading; reported, nothing to upload");
                self.metrics.changed_chunks.inc();
                self.finish_if_pending(chunk, ChunkState::Gone)
            }
            Err(e) => Err(Error::ChunkIo {
                path,
                action: "stat",
                source: e,
            }),
            Ok(meta) if meta.file_type().is_file() => {
                let identity = scan::identity_of(&meta);
                if identity != chunk.identity {
                    let (camera, file_name, name) =
                        scan::split_name(std::path::Path::new(&chunk.name)).ok_or_else(|| {
                            Error::UnsafeKey {
                                name: chunk.name.clone(),
                                key: chunk.key.clone(),
                                reason: "the journaled name is not a plain relative path",
                            }
                        })?;
                    self.readiness().forget(&name);
                    let entry = ScanEntry {
                        name,
                        camera,
                        file_name,
                        identity,
                    };
                    self.journal_entry_now(&entry)?;
                }
                Ok(())
            }
            Ok(_) => {
                self.metrics.changed_chunks.inc();
                self.finish_if_pending(chunk, ChunkState::Gone)
            }
        }
    }

    fn finish_if_pending(&self, chunk: &Chunk, state: ChunkState) -> Result<(), Error> {
        match self.journal.finish(chunk, state, now_millis()) {
            Err(Error::Transition { .. }) => Ok(()),
            other => other,
        }
    }

    /// Multipart uploads waiting to be aborted.
    pub fn pending_aborts(&self) -> Result<Vec<PendingAbort>, Error> {
        self.journal.pending_aborts()
    }

    /// An abort was confirmed by the store (or it no longer knows the upload).
    pub fn abort_done(&self, upload_id: &str) -> Result<(), Error> {
        self.journal.abort_done(upload_id)
    }

    /// Every multipart upload id the journal knows (open, or queued for abort): an upload under
    /// the site prefix that is not in here is an orphan.
    pub fn upload_ids(&self) -> Result<HashSet<String>, Error> {
        self.journal.upload_ids()
    }

    /// One chunk by name (status, tests).
    pub fn chunk_by_name(&self, name: &str) -> Result<Option<Chunk>, Error> {
        self.journal.chunk_by_name(name)
    }

    /// Chunks in a state, oldest first.
    pub fn chunks_in(&self, state: ChunkState) -> Result<Vec<Chunk>, Error> {
        self.journal.chunks_in(state)
    }

    /// Chunks still waiting for upload.
    pub fn pending(&self) -> Result<Vec<Chunk>, Error> {
        let mut v = self.journal.chunks_in(ChunkState::Discovered)?;
        v.extend(self.journal.chunks_in(ChunkState::Uploading)?);
        Ok(v)
    }

    /// What is waiting to be uploaded.
    pub fn backlog(&self) -> Result<Backlog, Error> {
        self.journal.backlog()
    }

    /// The journal file.
    pub fn journal_path(&self) -> &std::path::Path {
        self.journal.path()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use crate::test_util::TempSpool;
    use crate::{Chunk, ChunkState, Removal};

    /// A spool with `cam1/a.mp4` holding `data`, claimed for upload.
    fn claimed(data: &[u8]) -> (TempSpool, std::path::PathBuf, Chunk) {
        let spool = TempSpool::new();
        let path = spool.write_chunk("cam1/a.mp4", data);
        spool.spool.scan_once().unwrap();
        let chunk = spool.spool.claim().unwrap().unwrap().chunk().clone();
        (spool, path, chunk)
    }

    #[test]
    fn a_verified_file_still_open_for_writing_is_kept_until_the_writer_is_done() {
        let (spool, path, chunk) = claimed(b"first");
        // The camera opens it again (to append) while the upload finishes.
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(
            spool.spool.verified(&chunk, "crc32c:x").unwrap(),
            Removal::InUse
        );
        assert!(path.exists());
        drop(writer);
        spool.spool.retry_removals().unwrap();
        assert!(!path.exists());
        let c = spool.spool.chunk_by_name("cam1/a.mp4").unwrap().unwrap();
        assert_eq!(c.state, ChunkState::Removed);
    }

    #[test]
    fn a_verified_file_that_grows_is_never_deleted_and_goes_up_again() {
        let (spool, path, chunk) = claimed(b"first");
        let mut writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(
            spool.spool.verified(&chunk, "crc32c:x").unwrap(),
            Removal::InUse
        );
        writer.write_all(b" and more").unwrap();
        drop(writer);
        spool.spool.retry_removals().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first and more");
        spool.spool.scan_once().unwrap();
        let again = spool.spool.claim().unwrap().unwrap().chunk().clone();
        assert_eq!(again.identity.size, 14);
        assert_eq!(again.state, ChunkState::Discovered);
    }

    #[test]
    fn a_step_on_a_chunk_that_changed_is_refused() {
        let (spool, path, chunk) = claimed(b"first");
        std::fs::write(&path, b"rewritten").unwrap();
        spool.spool.scan_once().unwrap();
        let err = spool.spool.verified(&chunk, "crc32c:x").unwrap_err();
        assert!(matches!(err, crate::Error::Transition { .. }), "{err:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"rewritten");
    }
}
