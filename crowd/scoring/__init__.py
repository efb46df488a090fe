"""Emotion scorers: map a text to a 28-way GoEmotions vector. The offline default is an
embedding model with a small trained head (`head`); `scorers` holds the scorer protocol, the
implementations and the distance to a target; `cli` is `python -m crowd scorer`."""
