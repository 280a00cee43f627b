//! Leader epochs on the data path (see `cutover::epochs`): epochs a client
//! sends are turned back into the real epochs of the cluster it talks to,
//! and epochs in answers are presented above everything shown before.
//!
//! An epoch from an era the client should have left ("stale") is never
//! passed on as the new cluster's own:
//! - as the current leader epoch of a Fetch, ListOffsets or
//!   OffsetForLeaderEpoch, it becomes an epoch the broker answers with
//!   UNKNOWN_LEADER_EPOCH, which every client retries after refreshing its
//!   metadata;
//! - as the epoch of a consumer's position (OffsetForLeaderEpoch), the
//!   position itself is an offset of the other cluster: the validation is
//!   answered UNKNOWN_LEADER_EPOCH too, so the consumer keeps that partition
//!   paused and reads nothing at an offset of the wrong cluster, until its
//!   group membership is reset (switchyard answers a member of the old
//!   cluster UNKNOWN_MEMBER_ID) and it resumes from its translated
//!   committed offset;
//! - as the epoch of a committed offset (OffsetCommit), the offset is
//!   translated into the cluster the commit goes to.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use super::Shared;
use crate::config::ClusterName;
use crate::cutover::epochs::ClientEpoch;
use crate::error::SessionError;
use crate::protocol::epochs::{self as walk, read_i32, read_i64, write_i32, write_i64};
use crate::protocol::frame::{Frame, LENGTH_PREFIX};
use crate::protocol::header::RequestHeaderPeek;

/// An epoch no broker has reached: it is answered UNKNOWN_LEADER_EPOCH.
const UNREACHED_EPOCH: i32 = i32::MAX;

/// Whether the answer to `api` carries epochs to present.
pub(super) fn answer_carries_epochs(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::Fetch | ApiKey::ListOffsets | ApiKey::OffsetForLeaderEpoch | ApiKey::OffsetFetch
    )
}

/// What to do with a request's epochs.
pub(super) enum RequestEpochs {
    /// Nothing to change.
    Unchanged,
    /// Forward these bytes instead.
    Patched(Bytes),
    /// A commit carries offsets of another cluster that cannot be
    /// translated: refuse it with this error.
    Refuse(i16),
}

/// Turns the epochs of a request to `cluster` into that cluster's real
/// ones (see the module documentation for stale ones).
pub(super) fn request(
    shared: &Shared,
    cluster: ClusterName,
    frame: &Frame,
    header: &RequestHeaderPeek,
) -> Result<RequestEpochs, SessionError> {
    let epochs = &shared.epochs;
    if !epochs.translates(cluster) {
        return Ok(RequestEpochs::Unchanged);
    }
    let payload = frame.payload();
    let bad = |e: crate::protocol::header::PeekError| SessionError::BadRequest(e.to_string());
    let mut patches: Vec<(usize, i32)> = Vec::new();
    let mut offsets: Vec<(usize, i64)> = Vec::new();
    let mut stale = 0u64;
    let current = |at: usize, patches: &mut Vec<(usize, i32)>, stale: &mut u64| {
        let Some(sent) = read_i32(payload, at) else {
            return;
        };
        match own_epoch(epochs.from_client(cluster, sent), cluster) {
            Some(real) if real != sent => patches.push((at, real)),
            Some(_) => {}
            None => {
                *stale += 1;
                patches.push((at, UNREACHED_EPOCH));
            }
        }
    };
    match header.api_key {
        ApiKey::Fetch => {
            for e in walk::fetch_request(payload, header).map_err(bad)? {
                current(e.at, &mut patches, &mut stale);
            }
        }
        ApiKey::ListOffsets => {
            for e in walk::list_offsets_request(payload, header).map_err(bad)? {
                current(e.at, &mut patches, &mut stale);
            }
        }
        ApiKey::OffsetForLeaderEpoch => {
            for p in walk::offset_for_leader_epoch_request(payload, header).map_err(bad)? {
                let Some(position_epoch) = read_i32(payload, p.leader_epoch_at) else {
                    continue;
                };
                match own_epoch(epochs.from_client(cluster, position_epoch), cluster) {
                    // A position in this cluster's offsets (also from an
                    // earlier era of it, as after a rollback).
                    Some(real) => {
                        if real != position_epoch {
                            patches.push((p.leader_epoch_at, real));
                        }
                        current(p.current_at, &mut patches, &mut stale);
                    }
                    None => {
                        // The position is an offset of a cluster the
                        // client has left: hold it.
                        stale += 1;
                        shared.metrics.stale_positions_held.increment(1);
                        tracing::debug!(topic = %p.topic, partition = p.partition, position_epoch,
                            "position from before the last move held until the consumer repositions");
                        patches.push((p.current_at, UNREACHED_EPOCH));
                    }
                }
            }
        }
        ApiKey::OffsetCommit => {
            for c in walk::offset_commit_request(payload, header).map_err(bad)? {
                let (Some(epoch), Some(offset)) = (
                    read_i32(payload, c.epoch_at),
                    read_i64(payload, c.offset_at),
                ) else {
                    continue;
                };
                match epochs.from_client(cluster, epoch) {
                    ClientEpoch::Real(real) if real != epoch => patches.push((c.epoch_at, real)),
                    ClientEpoch::Real(_) => {}
                    ClientEpoch::Stale {
                        cluster: from,
                        real,
                    } if from == cluster => {
                        patches.push((c.epoch_at, real));
                    }
                    ClientEpoch::Stale { cluster: from, .. } => {
                        stale += 1;
                        match shared.translate_offset(from, &c.topic, c.partition, offset) {
                            Ok(translated) => {
                                tracing::info!(topic = %c.topic, partition = c.partition, offset, translated,
                                    from = %from, to = %cluster, "commit of an offset of the other cluster translated");
                                offsets.push((c.offset_at, translated));
                                patches.push((c.epoch_at, -1));
                            }
                            Err(reason) => {
                                tracing::warn!(topic = %c.topic, partition = c.partition, offset, %reason,
                                    "commit of an offset of the other cluster refused: it cannot be translated");
                                return Ok(RequestEpochs::Refuse(
                                    crate::protocol::errors::UNKNOWN_MEMBER_ID,
                                ));
                            }
                        }
                    }
                }
            }
        }
        _ => return Ok(RequestEpochs::Unchanged),
    }
    if stale > 0 {
        shared.metrics.stale_epochs.increment(stale);
    }
    if patches.is_empty() && offsets.is_empty() {
        return Ok(RequestEpochs::Unchanged);
    }
    let mut copy = BytesMut::from(&frame.wire_bytes()[..]);
    for (at, value) in patches {
        write_i32(&mut copy, LENGTH_PREFIX + at, value);
    }
    for (at, value) in offsets {
        write_i64(&mut copy, LENGTH_PREFIX + at, value);
    }
    Ok(RequestEpochs::Patched(copy.freeze()))
}

/// The real epoch a client's epoch stands for when it is one of
/// `cluster`'s own, of this era or an earlier one (which the broker then
/// judges); `None` for an epoch of the other cluster.
fn own_epoch(epoch: ClientEpoch, cluster: ClusterName) -> Option<i32> {
    match epoch {
        ClientEpoch::Real(real) => Some(real),
        ClientEpoch::Stale { cluster: of, real } => (of == cluster).then_some(real),
    }
}

/// Presents the epochs of an answer from `cluster` (a whole frame, length
/// prefix included). An answer that does not walk goes back unchanged.
pub(super) fn answer(
    shared: &Shared,
    cluster: ClusterName,
    api: ApiKey,
    version: i16,
    frame: Bytes,
) -> Bytes {
    let payload = &frame[LENGTH_PREFIX..];
    let positions = match api {
        ApiKey::Fetch => walk::fetch_response(payload, version),
        ApiKey::ListOffsets => walk::list_offsets_response(payload, version),
        ApiKey::OffsetForLeaderEpoch => walk::offset_for_leader_epoch_response(payload, version),
        ApiKey::OffsetFetch => walk::offset_fetch_response(payload, version),
        _ => return frame,
    };
    let Some(positions) = positions else {
        tracing::warn!(api = ?api, version, %cluster, "answer not walked for leader epochs; passed on as it is");
        return frame;
    };
    let mut copy: Option<BytesMut> = None;
    for at in positions {
        let Some(real) = read_i32(payload, at) else {
            continue;
        };
        let presented = shared.epochs.present(cluster, real);
        if presented != real {
            let buf = copy.get_or_insert_with(|| BytesMut::from(&frame[..]));
            write_i32(buf, LENGTH_PREFIX + at, presented);
        }
    }
    copy.map_or(frame, BytesMut::freeze)
}
