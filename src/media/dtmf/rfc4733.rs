//! The RFC 4733 telephone-event payload (section 2.3): one 4-byte event block.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Owns: encoding and decoding that block. Must not: read the RTP header (the caller
//! passes timestamp and marker beside the payload) or keep state ([`super::sender`] and
//! [`super::receiver`] do).
//!
//! The R bit is written 0 and ignored on receipt (2.3.3). Only the first block of a
//! payload is read: packing several events in one packet (2.5.1.5) is rare and, when
//! present, the first block is still a valid event.

use super::DtmfError;

/// The loudest volume the field can say: 0 dBm0; the quietest is 63 (-63 dBm0).
pub const MAX_VOLUME: u8 = 63;
/// Bytes in one event block.
pub const EVENT_LEN: usize = 4;

/// One telephone-event block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// The event code (0-15 are DTMF digits, see [`super::Digit::from_event`]).
    pub event: u8,
    /// The E bit: this is (a retransmission of) the final packet of the event.
    pub end: bool,
    /// The tone's power as -dBm0, 0..=63 (2.3.4).
    pub volume: u8,
    /// How long the event (segment) has lasted, in RTP timestamp units, counted from
    /// the packet's RTP timestamp (2.3.5).
    pub duration: u16,
}

impl EventPayload {
    /// The 4 bytes on the wire. A volume above 63 does not fit the 6-bit field.
    pub fn encode(&self) -> Result<[u8; EVENT_LEN], DtmfError> {
        if self.volume > MAX_VOLUME {
            return Err(DtmfError::VolumeOutOfRange(self.volume));
        }
        let [d_hi, d_lo] = self.duration.to_be_bytes();
        let flags = if self.end { 0x80 } else { 0 } | self.volume;
        Ok([self.event, flags, d_hi, d_lo])
    }

    /// Reads the first event block of an RTP payload.
    pub fn decode(payload: &[u8]) -> Result<EventPayload, DtmfError> {
        match *payload {
            [event, flags, d_hi, d_lo, ..] => Ok(EventPayload {
                event,
                end: flags & 0x80 != 0,
                // The R bit (0x40) is reserved: ignored on receipt.
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([d_hi, d_lo]),
            }),
            _ => Err(DtmfError::ShortEventPayload(payload.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_wire_layout() {
        let p = EventPayload {
            event: 5,
            end: true,
            volume: 10,
            duration: 0x0320,
        };
        assert_eq!(p.encode().unwrap(), [5, 0x8a, 0x03, 0x20]);
        assert_eq!(EventPayload::decode(&[5, 0x8a, 0x03, 0x20]).unwrap(), p);
    }

    #[test]
    fn round_trips_all_fields() {
        for event in [0u8, 11, 15, 16, 255] {
            for end in [false, true] {
                for volume in [0u8, 7, 63] {
                    for duration in [0u16, 160, 65_535] {
                        let p = EventPayload {
                            event,
                            end,
                            volume,
                            duration,
                        };
                        assert_eq!(EventPayload::decode(&p.encode().unwrap()).unwrap(), p);
                    }
                }
            }
        }
    }

    #[test]
    fn reserved_bit_is_ignored_and_extra_blocks_are_skipped() {
        let p = EventPayload::decode(&[11, 0x40 | 0x80 | 3, 0, 160, 1, 2, 3, 4]).unwrap();
        assert_eq!(
            p,
            EventPayload {
                event: 11,
                end: true,
                volume: 3,
                duration: 160
            }
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            EventPayload::decode(&[1, 2, 3]),
            Err(DtmfError::ShortEventPayload(3))
        ));
        assert!(matches!(
            EventPayload::decode(&[]),
            Err(DtmfError::ShortEventPayload(0))
        ));
        let loud = EventPayload {
            event: 1,
            end: false,
            volume: 64,
            duration: 0,
        };
        assert!(matches!(
            loud.encode(),
            Err(DtmfError::VolumeOutOfRange(64))
        ));
    }
}
