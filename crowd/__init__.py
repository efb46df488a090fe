"""Crowd-SFT: live human alignment of language models by competing groups of volunteers.

The domain package. It never imports gradio; the UI lives in `crowd.ui` and calls `crowd.service`.
"""
