"""The offline stand-ins: the synthetic demo corpus, its speech synthesis, tiny randomly initialised encoders."""
