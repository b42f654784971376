//! Codec choices of a bridged call: what the B2BUA adds to an offer so the far phone can
//! pick a codec the media engine can transcode to, and what an answer becomes when the
//! answerer picked a codec the offerer did not offer (then the call transcodes).
//!
//! Owns: those two SDP edits and the [`LegFormat`]s they imply, for a transcoded call and
//! for a relayed one ([`relay_formats`], what a recording decodes). Must not: touch the
//! relay or addresses (the caller rewrites addresses afterwards and tells the relay).
//! Pure functions of the SDP, unit-tested here.
//!
//! The fast path wins whenever it can: the offerer's own codecs stay first in the offer,
//! so a phone that shares one answers with it and the relay forwards packets untouched.

use crate::media::codec::{CodecKind, CodecList, CodecParams};
use crate::media::transcode::LegFormat;
use crate::sip::sdp::{Attribute, MediaDescription, RtpMap, SessionDescription};

/// The codec of an m-line's payload type that the engine can code and may use, if any.
fn engine_codec(m: &MediaDescription, pt: u8, codecs: &CodecList) -> Option<(CodecKind, RtpMap)> {
    let map = m.rtpmap(pt)?;
    CodecKind::from_rtpmap(&map.encoding, map.clock_rate)
        .filter(|k| codecs.contains(*k))
        .map(|k| (k, map))
}

fn payload_types(m: &MediaDescription) -> impl Iterator<Item = u8> + '_ {
    m.formats.iter().filter_map(|f| f.parse::<u8>().ok())
}

/// Adds to m-line `index` of an offer every codec of `codecs` the offer lacks, in that
/// order, after the offer's own, when the offer has at least one of them (else
/// transcoding is impossible and adding would only mislead the answerer).
pub fn extend_offer(sdp: &mut SessionDescription, index: usize, codecs: &CodecList) {
    let Some(m) = sdp.media.get_mut(index) else {
        return;
    };
    let has: Vec<CodecKind> = payload_types(m)
        .filter_map(|pt| engine_codec(m, pt, codecs).map(|(k, _)| k))
        .collect();
    if has.is_empty() {
        return;
    }
    for &kind in codecs.as_slice() {
        if has.contains(&kind) {
            continue;
        }
        let used: Vec<u8> = payload_types(m).collect();
        let pt = match kind.static_payload_type() {
            Some(pt) if !used.contains(&pt) => pt,
            Some(_) => continue,
            None => match (96..=127).find(|p| !used.contains(p)) {
                Some(pt) => pt,
                None => continue,
            },
        };
        m.formats.push(pt.to_string());
        let rtpmap = match kind {
            // RFC 7587 4: always opus/48000/2, whatever is sent.
            CodecKind::Opus => format!("{pt} opus/48000/2"),
            _ => format!("{pt} {}/{}", kind.name(), kind.clock_rate()),
        };
        m.attributes.push(Attribute::value("rtpmap", rtpmap));
        if kind == CodecKind::Opus {
            m.attributes
                .push(Attribute::value("fmtp", format!("{pt} useinbandfec=1")));
        }
    }
}

/// Copies the `a=rtpmap` and `a=fmtp` lines of payload types `pts` from `from` to `to`.
fn copy_codec_lines(
    from: &MediaDescription,
    pts: impl Iterator<Item = u8>,
    to: &mut MediaDescription,
) {
    for pt in pts {
        for a in &from.attributes {
            let for_pt = a.value.as_deref().and_then(|v| {
                v.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u8>().ok())
            });
            let name = a.name.to_ascii_lowercase();
            if (name == "rtpmap" || name == "fmtp") && for_pt == Some(pt) {
                to.attributes.push(a.clone());
            }
        }
    }
}

/// How the answer to an offer from one leg can be given to that leg.
#[derive(Debug, Clone, PartialEq)]
pub enum Fit {
    /// The answerer chose a codec the offerer offered: relay untouched.
    Relay,
    /// The answerer chose a codec the offerer lacks: the offerer gets `answer` (its own
    /// codec in place of the answerer's) and the call transcodes between the formats.
    Transcode {
        answer: Box<SessionDescription>,
        offerer: LegFormat,
        answerer: LegFormat,
    },
    /// Nothing either side can use.
    NoCodec,
}

/// Reads `a=fmtp` Opus parameters (RFC 7587 6.1) the encoder towards this leg honours,
/// over the configured `defaults`.
fn opus_params(m: &MediaDescription, pt: u8, defaults: CodecParams) -> CodecParams {
    let mut p = defaults;
    for kv in m.fmtp(pt).unwrap_or("").split(';') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match (k.trim().to_ascii_lowercase().as_str(), v.trim()) {
            ("useinbandfec", v) => p.fec = v == "1",
            ("usedtx", v) => p.dtx = v == "1",
            // A maximum: ours stands when lower (0 = ours is libopus' choice).
            ("maxaveragebitrate", v) => {
                if let Ok(max) = v.parse::<u32>() {
                    p.bitrate = if p.bitrate == 0 {
                        max
                    } else {
                        p.bitrate.min(max)
                    };
                }
            }
            _ => {}
        }
    }
    p
}

/// The format of payload type `pt` on a leg whose media description is `m`.
fn leg_format(m: &MediaDescription, kind: CodecKind, pt: u8, defaults: CodecParams) -> LegFormat {
    LegFormat {
        codec: kind,
        pt,
        dtmf_pt: m.telephone_event().map(|t| t.payload_type),
        ptime_ms: m
            .ptime()
            .filter(|p| (10..=60).contains(p) && p % 10 == 0)
            .unwrap_or(20),
        params: if kind == CodecKind::Opus {
            opus_params(m, pt, defaults)
        } else {
            defaults
        },
    }
}

/// The answerer's codec: the first media format of its answer.
fn answerer_codec(am: &MediaDescription) -> Option<(u8, RtpMap)> {
    payload_types(am)
        .filter_map(|pt| am.rtpmap(pt).map(|m| (pt, m)))
        .find(|(_, m)| !m.is_telephone_event() && !m.is_auxiliary())
}

/// The formats of the offerer and the answerer (in that order) of m-line `index` when
/// the answer fits the offer as it is ([`Fit::Relay`]): the answerer's codec, with each
/// side's own payload type and telephone-event for it. `None` when that codec is not one
/// the engine decodes (the call is relayed all the same, but cannot be recorded).
pub fn relay_formats(
    offer: &SessionDescription,
    answer: &SessionDescription,
    index: usize,
    defaults: CodecParams,
) -> Option<[LegFormat; 2]> {
    let (om, am) = (offer.media.get(index)?, answer.media.get(index)?);
    let (a_pt, a_map) = answerer_codec(am)?;
    let kind = CodecKind::from_rtpmap(&a_map.encoding, a_map.clock_rate)?;
    let o_pt = payload_types(om)
        .find(|pt| om.rtpmap(*pt).is_some_and(|m| m.same_codec(&a_map)))
        .unwrap_or(a_pt);
    Some([
        leg_format(om, kind, o_pt, defaults),
        leg_format(am, kind, a_pt, defaults),
    ])
}

/// Decides how the `answer` (to an offer we built from `offer`, the offerer's own) fits
/// the offerer, for m-line `index`; `defaults` are the configured encoder settings.
pub fn fit_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
    index: usize,
    defaults: CodecParams,
    codecs: &CodecList,
) -> Fit {
    let (Some(om), Some(am)) = (offer.media.get(index), answer.media.get(index)) else {
        return Fit::NoCodec;
    };
    let Some((a_pt, a_map)) = answerer_codec(am) else {
        return Fit::NoCodec;
    };
    let offered = om.codecs();
    if offered.iter().any(|o| o.same_codec(&a_map)) {
        return Fit::Relay;
    }
    let Some(a_kind) =
        CodecKind::from_rtpmap(&a_map.encoding, a_map.clock_rate).filter(|k| codecs.contains(*k))
    else {
        return Fit::NoCodec;
    };
    // The offerer's codec: its most preferred one the engine has.
    let Some((o_pt, (o_kind, _))) =
        payload_types(om).find_map(|pt| engine_codec(om, pt, codecs).map(|c| (pt, c)))
    else {
        return Fit::NoCodec;
    };
    let mut fitted = answer.clone();
    let m = &mut fitted.media[index];
    let dtmf = om.telephone_event().map(|t| t.payload_type);
    m.formats = std::iter::once(o_pt)
        .chain(dtmf)
        .map(|p| p.to_string())
        .collect();
    // The answerer's codec lines go; the offerer's lines for what it gets back come in.
    m.attributes.retain(|a| {
        !["rtpmap", "fmtp", "ptime", "maxptime"]
            .iter()
            .any(|n| a.name.eq_ignore_ascii_case(n))
    });
    copy_codec_lines(om, std::iter::once(o_pt).chain(dtmf), m);
    if let Some(p) = om.ptime() {
        m.attributes.push(Attribute::value("ptime", p.to_string()));
    }
    Fit::Transcode {
        offerer: leg_format(om, o_kind, o_pt, defaults),
        answerer: leg_format(am, a_kind, a_pt, defaults),
        answer: Box::new(fitted),
    }
}

/// What the PBX answers when it is the far end of a leg itself (an app: IVR, voicemail):
/// for m-line `index` of `offer`, the offerer's most preferred codec of `codecs` and
/// telephone-event when offered (at the codec's clock when there is a choice), 20 ms
/// packets. The stream's port and direction are the caller's to set. `None` when the
/// engine has none of the offered codecs (the caller answers 488).
pub fn endpoint_answer(
    offer: &SessionDescription,
    index: usize,
    defaults: CodecParams,
    codecs: &CodecList,
) -> Option<(MediaDescription, LegFormat)> {
    let om = offer.media.get(index)?;
    let (pt, (kind, _)) =
        payload_types(om).find_map(|pt| engine_codec(om, pt, codecs).map(|c| (pt, c)))?;
    let events: Vec<RtpMap> = om
        .codecs()
        .into_iter()
        .filter(RtpMap::is_telephone_event)
        .collect();
    let dtmf = events
        .iter()
        .find(|t| t.clock_rate == kind.clock_rate())
        .or(events.first())
        .map(|t| t.payload_type);
    let mut m = MediaDescription::new(
        om.media.clone(),
        0,
        om.proto.clone(),
        std::iter::once(pt)
            .chain(dtmf)
            .map(|p| p.to_string())
            .collect(),
    );
    copy_codec_lines(om, std::iter::once(pt).chain(dtmf), &mut m);
    m.attributes.push(Attribute::value("ptime", "20"));
    let mut format = leg_format(om, kind, pt, defaults);
    format.dtmf_pt = dtmf;
    format.ptime_ms = 20;
    Some((m, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(m: &str) -> SessionDescription {
        SessionDescription::parse(&format!(
            "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{m}"
        ))
        .expect("sdp")
    }

    const OPUS_ONLY: &str = "m=audio 4000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\n\
                             a=fmtp:111 useinbandfec=1;usedtx=1\r\n\
                             a=rtpmap:101 telephone-event/48000\r\na=ptime:20\r\n";
    const PCMU_ONLY: &str = "m=audio 5000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n\
                             a=ptime:30\r\n";

    #[test]
    fn an_offer_gets_the_engine_codecs_it_lacks_after_its_own() {
        let mut offer = sdp(OPUS_ONLY);
        extend_offer(&mut offer, 0, &CodecList::default());
        let m = &offer.media[0];
        assert_eq!(m.formats, ["111", "101", "9", "0", "8"]);
        assert_eq!(m.rtpmap(9).map(|r| r.encoding), Some("G722".into()));

        let mut offer = sdp(PCMU_ONLY);
        extend_offer(&mut offer, 0, &CodecList::default());
        let m = &offer.media[0];
        assert_eq!(
            m.formats,
            ["0", "96", "97", "9", "8"],
            "96 is taken: Opus gets 97"
        );
        assert_eq!(m.rtpmap(97).map(|r| r.encoding), Some("opus".into()));
        assert_eq!(m.fmtp(97), Some("useinbandfec=1"));

        // Nothing the engine can decode: no promise of transcoding.
        let mut offer = sdp("m=audio 5000 RTP/AVP 3\r\n");
        extend_offer(&mut offer, 0, &CodecList::default());
        assert_eq!(offer.media[0].formats, ["3"]);
    }

    #[test]
    fn an_answer_with_an_offered_codec_is_relayed() {
        let offer = sdp(OPUS_ONLY);
        let answer = sdp("m=audio 6000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n");
        assert_eq!(
            fit_answer(
                &offer,
                &answer,
                0,
                CodecParams::default(),
                &CodecList::default()
            ),
            Fit::Relay
        );
    }

    #[test]
    fn a_relayed_answer_gives_both_legs_the_answerer_s_codec_with_their_own_numbers() {
        let offer = sdp(OPUS_ONLY);
        let answer = sdp(
            "m=audio 6000 RTP/AVP 96 100\r\na=rtpmap:96 opus/48000/2\r\n\
             a=rtpmap:100 telephone-event/48000\r\n",
        );
        let [o, a] = relay_formats(&offer, &answer, 0, CodecParams::default()).expect("formats");
        assert_eq!(
            (o.codec, o.pt, o.dtmf_pt),
            (CodecKind::Opus, 111, Some(101))
        );
        assert_eq!((a.codec, a.pt, a.dtmf_pt), (CodecKind::Opus, 96, Some(100)));
        let offer = sdp(PCMU_ONLY);
        let [o, a] = relay_formats(
            &offer,
            &sdp("m=audio 6000 RTP/AVP 0\r\n"),
            0,
            CodecParams::default(),
        )
        .expect("formats");
        assert_eq!(
            (o.codec, o.pt, o.ptime_ms, a.pt),
            (CodecKind::Pcmu, 0, 30, 0)
        );
        // A codec the engine cannot decode is relayed, not recorded.
        let gsm = sdp("m=audio 5000 RTP/AVP 3\r\n");
        assert_eq!(relay_formats(&gsm, &gsm, 0, CodecParams::default()), None);
        assert_eq!(relay_formats(&gsm, &gsm, 1, CodecParams::default()), None);
    }

    #[test]
    fn an_answer_with_a_codec_the_offerer_lacks_is_fitted_and_transcoded() {
        let offer = sdp(OPUS_ONLY);
        let answer = sdp(
            "m=audio 6000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n\
                          a=ptime:30\r\n",
        );
        let Fit::Transcode {
            answer,
            offerer,
            answerer,
        } = fit_answer(
            &offer,
            &answer,
            0,
            CodecParams::default(),
            &CodecList::default(),
        )
        else {
            panic!("transcode expected");
        };
        let m = &answer.media[0];
        assert_eq!(m.formats, ["111", "101"]);
        assert_eq!(m.rtpmap(111).map(|r| r.encoding), Some("opus".into()));
        assert_eq!(m.fmtp(111), Some("useinbandfec=1;usedtx=1"));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.port, 6000, "addresses are the caller's business");
        assert_eq!(
            (offerer.codec, offerer.pt, offerer.dtmf_pt),
            (CodecKind::Opus, 111, Some(101))
        );
        assert!(offerer.params.dtx && offerer.params.fec);
        assert_eq!(
            (
                answerer.codec,
                answerer.pt,
                answerer.dtmf_pt,
                answerer.ptime_ms
            ),
            (CodecKind::Pcmu, 0, Some(96), 30)
        );
    }

    #[test]
    fn the_configured_encoder_settings_reach_both_legs() {
        let offer = sdp(OPUS_ONLY);
        let answer = sdp("m=audio 6000 RTP/AVP 0\r\n");
        let defaults = CodecParams {
            complexity: 2,
            ..CodecParams::default()
        };
        let Fit::Transcode {
            offerer, answerer, ..
        } = fit_answer(&offer, &answer, 0, defaults, &CodecList::default())
        else {
            panic!("transcode expected");
        };
        assert_eq!(offerer.params.complexity, 2);
        assert!(
            offerer.params.dtx,
            "the SDP's usedtx=1 on top of the defaults"
        );
        assert_eq!(answerer.params, defaults);
    }

    #[test]
    fn no_engine_codec_on_either_side_is_no_codec() {
        let offer = sdp("m=audio 5000 RTP/AVP 3\r\n");
        let answer = sdp("m=audio 6000 RTP/AVP 0\r\n");
        assert_eq!(
            fit_answer(
                &offer,
                &answer,
                0,
                CodecParams::default(),
                &CodecList::default()
            ),
            Fit::NoCodec
        );
        let offer = sdp(OPUS_ONLY);
        let answer = sdp("m=audio 6000 RTP/AVP 3\r\n");
        assert_eq!(
            fit_answer(
                &offer,
                &answer,
                0,
                CodecParams::default(),
                &CodecList::default()
            ),
            Fit::NoCodec
        );
        let answer = sdp("m=audio 6000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/48000\r\n");
        assert_eq!(
            fit_answer(
                &offer,
                &answer,
                0,
                CodecParams::default(),
                &CodecList::default()
            ),
            Fit::NoCodec
        );
    }

    #[test]
    fn an_endpoint_answers_with_the_offerers_first_engine_codec_and_its_events() {
        let offer = sdp(
            "m=audio 4000 RTP/AVP 18 8 0 101 102\r\na=rtpmap:18 G729/8000\r\n\
             a=rtpmap:101 telephone-event/48000\r\na=rtpmap:102 telephone-event/8000\r\n\
             a=fmtp:102 0-15\r\n",
        );
        let (m, f) = endpoint_answer(&offer, 0, CodecParams::default(), &CodecList::default())
            .expect("answer");
        assert_eq!(m.formats, vec!["8", "102"]);
        assert_eq!((f.codec, f.pt, f.dtmf_pt), (CodecKind::Pcma, 8, Some(102)));
        assert!(m
            .attributes
            .iter()
            .any(|a| a.value.as_deref() == Some("102 0-15")));
        let opus = sdp(OPUS_ONLY);
        let (m, f) = endpoint_answer(&opus, 0, CodecParams::default(), &CodecList::default())
            .expect("answer");
        assert_eq!(m.formats, vec!["111", "101"]);
        assert_eq!(
            (f.codec, f.dtmf_pt, f.ptime_ms),
            (CodecKind::Opus, Some(101), 20)
        );
        assert!(f.params.dtx, "the offer's fmtp is honoured");
        let g729 = sdp("m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n");
        assert!(endpoint_answer(&g729, 0, CodecParams::default(), &CodecList::default()).is_none());
    }

    #[test]
    fn the_configured_codec_list_decides_what_is_added_and_what_an_app_answers_with() {
        let only = CodecList::new(&[CodecKind::Pcma, CodecKind::G722]);
        // A PCMU-only offer has none of the list: nothing to transcode from, nothing added.
        let mut offer = sdp("m=audio 4000 RTP/AVP 0\r\n");
        extend_offer(&mut offer, 0, &only);
        assert_eq!(offer.media[0].formats, vec!["0"]);
        // A PCMA offer gets G.722 appended, and no Opus.
        let mut offer = sdp("m=audio 4000 RTP/AVP 8 0\r\n");
        extend_offer(&mut offer, 0, &only);
        assert_eq!(offer.media[0].formats, vec!["8", "0", "9"]);
        // An app answers with the caller's first codec that is in the list.
        let offer = sdp("m=audio 4000 RTP/AVP 0 9 8\r\n");
        let (_, f) = endpoint_answer(&offer, 0, CodecParams::default(), &only).expect("answer");
        assert_eq!(f.codec, CodecKind::G722);
        assert_eq!(
            CodecList::new(&[CodecKind::Pcmu, CodecKind::Pcmu]).as_slice(),
            &[CodecKind::Pcmu]
        );
    }

    #[test]
    fn a_phones_maxaveragebitrate_caps_ours_and_never_raises_it() {
        let opus = |max: u32| {
            sdp(&format!(
                "m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n\
                 a=fmtp:111 maxaveragebitrate={max}\r\n"
            ))
        };
        let ours = CodecParams::default();
        assert_eq!(ours.bitrate, 16_000);
        let rate = |max| {
            endpoint_answer(&opus(max), 0, ours, &CodecList::default())
                .expect("answer")
                .1
                .params
                .bitrate
        };
        assert_eq!(rate(12_000), 12_000);
        assert_eq!(rate(40_000), 16_000);
    }
}
