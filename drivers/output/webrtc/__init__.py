"""WebRTC outputs: media tracks fed by the daemon (`tracks`), viewer peers (`peers`), publishers to media
servers (`publisher`: `whip`, `janus`), the DTLS setup all our peers share (`dtls`) and codec settings
(`codecs`)."""
