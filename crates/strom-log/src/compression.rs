//! Compressed batches from Kafka producers: gzip, snappy, lz4 and zstd, the codecs of Kafka's
//! RecordBatch v2 (attribute bits 0-2). A compressed batch is the usual 61-byte header
//! followed by the records, compressed as one block; this module turns it into the same
//! batch uncompressed, which is what the log stores (like a broker with
//! `compression.type=uncompressed`): readers, rules, the lake and fetches then never
//! decompress, and a fetch still serves the stored bytes as they are.
//!
//! Decompression is bounded: the output may not pass `limit` bytes, whatever the compressed
//! input claims, so a small batch cannot expand into gigabytes (a decompression bomb).

use std::io::{Read, Write};

use bytes::BytesMut;

use crate::batch::{BatchHeader, HEADER_BYTES, crc_matches, set_codec};
use crate::limits::BATCH_BYTES_MAX;

/// Bytes a compressed batch's records may take once decompressed: what a stored batch may
/// take, less its header.
pub const DECOMPRESSED_BYTES_MAX: usize = BATCH_BYTES_MAX - HEADER_BYTES;

/// The codecs of Kafka's attribute bits.
pub const GZIP: u8 = 1;
pub const SNAPPY: u8 = 2;
pub const LZ4: u8 = 3;
pub const ZSTD: u8 = 4;

/// A codec's name, as Kafka's `compression.type` spells it.
pub fn codec_name(codec: u8) -> &'static str {
    match codec {
        0 => "none",
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

/// The xerial framing (snappy-java's `SnappyOutputStream`, which the Java client writes):
/// a 16-byte header, then blocks of a 4-byte big-endian length and raw snappy.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;

/// Why a compressed batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// Attribute bits naming no codec Kafka has (5, 6, 7).
    #[error("compression codec {0} does not exist (1 gzip, 2 snappy, 3 lz4, 4 zstd)")]
    UnknownCodec(u8),
    /// The records would take more than the limit once decompressed.
    #[error("the batch's records take more than {limit} bytes decompressed")]
    TooLarge { limit: usize },
    /// The header or its CRC is wrong, or the compressed bytes do not decode.
    #[error("{0}")]
    Corrupt(String),
}

/// A producer's batch with its records decompressed, as an uncompressed batch with the same
/// header fields (producer id, epoch, sequence, timestamps, count) and a new length and
/// CRC; `None` when the batch is not compressed. The compressed batch's CRC is checked first.
/// The decompressed records may take at most `limit` bytes.
pub fn decompress_batch(batch: &[u8], limit: usize) -> Result<Option<BytesMut>, DecompressError> {
    let header = BatchHeader::parse(batch).map_err(DecompressError::Corrupt)?;
    let codec = header.compression();
    if codec == 0 {
        return Ok(None);
    }
    if header.size_bytes != batch.len() {
        return Err(DecompressError::Corrupt(format!(
            "the header says {} bytes, the batch has {}",
            header.size_bytes,
            batch.len()
        )));
    }
    if !crc_matches(batch, &header) {
        return Err(DecompressError::Corrupt("CRC-32C mismatch".into()));
    }
    // The records are decompressed right after a copy of the header: one buffer, no copy.
    let mut out = batch[..HEADER_BYTES].to_vec();
    decompress_onto(codec, &batch[HEADER_BYTES..], limit, &mut out)?;
    let mut out = BytesMut::from(bytes::Bytes::from(out));
    if out.len() > i32::MAX as usize {
        return Err(DecompressError::TooLarge { limit: limit.min(i32::MAX as usize) });
    }
    set_codec(&mut out, 0);
    Ok(Some(out))
}

/// An uncompressed batch with its records compressed by `codec`, as a producer sends it:
/// the same header with the codec's attribute bits, a new length and CRC (benchmarks and
/// tests; snappy is written raw, as librdkafka does).
pub fn compress_batch(batch: &[u8], codec: u8) -> Result<BytesMut, String> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != 0 || header.size_bytes != batch.len() {
        return Err("not a whole uncompressed batch".into());
    }
    let records = &batch[HEADER_BYTES..];
    let io = |error: std::io::Error| error.to_string();
    let compressed = match codec {
        GZIP => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(records).map_err(io)?;
            encoder.finish().map_err(io)?
        }
        SNAPPY => snap::raw::Encoder::new().compress_vec(records).map_err(|e| e.to_string())?,
        LZ4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(records).map_err(io)?;
            encoder.finish().map_err(|e| e.to_string())?
        }
        ZSTD => zstd::stream::encode_all(records, 3).map_err(io)?,
        other => return Err(format!("compression codec {other} does not exist")),
    };
    Ok(seal(&batch[..HEADER_BYTES], codec, &compressed))
}

/// A batch of `header` (61 bytes, from an uncompressed batch) and `compressed` records,
/// with `codec`'s attribute bits, its length and CRC set.
pub fn seal(header: &[u8], codec: u8, compressed: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(HEADER_BYTES + compressed.len());
    out.extend_from_slice(&header[..HEADER_BYTES]);
    out.extend_from_slice(compressed);
    set_codec(&mut out, codec);
    out
}

/// Decompresses one codec's block, to at most `limit` bytes.
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    decompress_onto(codec, data, limit, &mut out)?;
    Ok(out)
}

/// Decompresses one codec's block onto the end of `out`, adding at most `limit` bytes.
fn decompress_onto(codec: u8, data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let corrupt = |name: &str, error: std::io::Error| DecompressError::Corrupt(format!("{name}: {error}"));
    let start = out.len();
    let bounded = |decoder: &mut dyn Read, out: &mut Vec<u8>| decoder.take(limit as u64 + 1).read_to_end(out);
    match codec {
        GZIP => bounded(&mut flate2::read::MultiGzDecoder::new(data), out).map_err(|e| corrupt("gzip", e))?,
        SNAPPY => return snappy(data, limit, out),
        LZ4 => bounded(&mut lz4_flex::frame::FrameDecoder::new(data), out).map_err(|e| corrupt("lz4", e))?,
        ZSTD => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt("zstd", e))?;
            bounded(&mut decoder, out).map_err(|e| corrupt("zstd", e))?
        }
        other => return Err(DecompressError::UnknownCodec(other)),
    };
    // The decoder was stopped one byte past the limit, if it got there.
    if out.len() - start > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(())
}

/// Raw snappy (librdkafka) or xerial-framed snappy (the Java client), onto the end of `out`.
/// Each block's length is read from its preamble and checked against what is left of
/// `limit` before it is decoded.
fn snappy(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let mut decoder = snap::raw::Decoder::new();
    let start = out.len();
    let mut block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), DecompressError> {
        let length =
            snap::raw::decompress_len(compressed).map_err(|e| DecompressError::Corrupt(format!("snappy: {e}")))?;
        if length > limit - (out.len() - start) {
            return Err(DecompressError::TooLarge { limit });
        }
        let at = out.len();
        out.resize(at + length, 0);
        let written = decoder
            .decompress(compressed, &mut out[at..])
            .map_err(|e| DecompressError::Corrupt(format!("snappy: {e}")))?;
        out.truncate(at + written);
        Ok(())
    };
    if !data.starts_with(&XERIAL_MAGIC) {
        return block(data, out);
    }
    let mut rest = data
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| DecompressError::Corrupt("snappy: short xerial header".into()))?;
    while !rest.is_empty() {
        let (length, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| DecompressError::Corrupt("snappy: a xerial block length is cut short".into()))?;
        let length = u32::from_be_bytes(*length) as usize;
        let compressed = after.get(..length).ok_or_else(|| {
            DecompressError::Corrupt(format!("snappy: a xerial block of {length} bytes is cut short"))
        })?;
        block(compressed, out)?;
        rest = &after[length..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{EncodedBatch, RecordIn, decode_records, reseal};

    fn records() -> Vec<RecordIn> {
        (0..200)
            .map(|i| RecordIn {
                key: Some(bytes::Bytes::from(format!("user-{}", i % 7))),
                value: Some(bytes::Bytes::from(format!("{{\"event\":\"AddToCart\",\"n\":{i}}}"))),
                timestamp_ms: 1_795_334_400_000 + i,
                headers: vec![("h".to_string(), bytes::Bytes::from_static(b"v"))],
            })
            .collect()
    }

    fn plain() -> BytesMut {
        BytesMut::from(&EncodedBatch::encode(&records()).unwrap().into_bytes()[..])
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn xerial(data: &[u8]) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        // Two blocks, as snappy-java writes data longer than its block size.
        for part in data.chunks(data.len() / 2 + 1) {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            out.extend_from_slice(&(block.len() as u32).to_be_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    #[test]
    fn every_codec_gives_back_the_uncompressed_batch_byte_for_byte() {
        let plain = plain();
        let mut cases: Vec<(&str, BytesMut)> = [("gzip", GZIP), ("snappy", SNAPPY), ("lz4", LZ4), ("zstd", ZSTD)]
            .into_iter()
            .map(|(name, codec)| (name, compress_batch(&plain, codec).unwrap()))
            .collect();
        cases.push(("xerial snappy", seal(&plain, SNAPPY, &xerial(&plain[HEADER_BYTES..]))));
        for (name, batch) in cases {
            assert!(batch.len() < plain.len() / 2, "{name} shrinks the records");
            let out = decompress_batch(&batch, 1 << 20).unwrap().unwrap_or_else(|| panic!("{name} is compressed"));
            assert_eq!(out, plain, "{name}: the same batch as if sent uncompressed");
            let taken = EncodedBatch::from_client(out).unwrap();
            let decoded = decode_records(taken.into_bytes()).unwrap();
            assert_eq!(decoded.len(), 200);
            assert_eq!(decoded[199].value.as_deref(), Some(&b"{\"event\":\"AddToCart\",\"n\":199}"[..]));
        }
        assert_eq!(decompress_batch(&plain, 1 << 20).unwrap(), None, "an uncompressed batch is left alone");
        assert!(compress_batch(&plain, 5).is_err());
    }

    #[test]
    fn a_decompression_bomb_is_refused_at_the_limit() {
        // 64 MiB of zeros: about 64 KiB compressed; refused once 1 MiB is out.
        let zeros = vec![0u8; 64 << 20];
        for (name, codec, compressed) in [
            ("gzip", GZIP, gzip(&zeros)),
            ("snappy", SNAPPY, snap::raw::Encoder::new().compress_vec(&zeros).unwrap()),
            ("xerial snappy", SNAPPY, xerial(&zeros)),
            ("lz4", LZ4, lz4(&zeros)),
            ("zstd", ZSTD, zstd(&zeros)),
        ] {
            assert!(compressed.len() < 4 << 20, "{name}: {}", compressed.len());
            assert_eq!(
                decompress(codec, &compressed, 1 << 20),
                Err(DecompressError::TooLarge { limit: 1 << 20 }),
                "{name}"
            );
        }
    }

    #[test]
    fn corrupt_input_and_unknown_codecs_are_errors() {
        let mut batch = compress_batch(&plain(), LZ4).unwrap();
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert_eq!(decompress_batch(&batch, 1 << 20), Err(DecompressError::Corrupt("CRC-32C mismatch".into())));
        reseal(&mut batch);
        assert!(matches!(decompress_batch(&batch, 1 << 20), Err(DecompressError::Corrupt(_))), "a damaged lz4 frame");
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let answer = decompress(codec, b"not compressed at all", 1 << 20);
            assert!(matches!(answer, Err(DecompressError::Corrupt(_))), "codec {codec}: {answer:?}");
        }
        let cut_short = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\xff\xff\xff\xff";
        assert!(matches!(decompress(SNAPPY, cut_short, 1 << 20), Err(DecompressError::Corrupt(_))));
        assert_eq!(decompress(5, b"x", 10), Err(DecompressError::UnknownCodec(5)));
        // Whatever the bytes, decompression answers: it never panics.
        let batch = compress_batch(&plain(), ZSTD).unwrap();
        for cut in 0..batch.len() {
            let _ = decompress(ZSTD, &batch[HEADER_BYTES.min(cut)..cut], 1 << 20);
        }
    }
}
