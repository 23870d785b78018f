"""Signal processing shared by every stage that handles audio (a lower layer, like `core`):
log-mel spectrograms and their inversion (`audio.spectrogram`), WAV encoding and decoding
through libsndfile (`audio.wav`). Stage-specific audio code lives in its stage's package
(`data.audio`, `models.audio`, `evaluate.audio`, `deploy.audio`)."""
