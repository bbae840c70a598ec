"""WebRTC outputs: the shared encoders (`encoder_thread`, `encoder`, `audio_encoder`, `fanout`, with
`packed_alpha` and the bitrate `tiers`), each peer's tracks of their packets (`tracks`), viewer peers
(`peers`), publishers to media servers (`publisher`: `whip`, `janus`), the DTLS setup all our peers share
(`dtls`) and codec choices (`codecs`)."""
