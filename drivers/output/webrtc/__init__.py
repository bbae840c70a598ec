"""WebRTC outputs: media tracks fed by the daemon (`tracks`), viewer peers (`peers`), the WHIP publisher
(`whip`) and codec settings (`codecs`)."""
