//! SIP message model, parser, serializer and stream framing.
