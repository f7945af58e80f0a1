"""Inference: the one generator (audio → motion) and what surrounds it.

    generator.py  MotionGenerator (from a checkpoint or a live module), generate_motion, clip_seed
    inputs.py     audio files, references, driving motion, emotion names (GenerationError)
    pose.py       pose modes (generated, fixed, driving, spin)
    render.py     face-model rendering with the audio muxed in
    request.py    the `playmate generate` request and its execution to files (torch-free import)
"""
