"""Synthetic drives in the DrivingScenePTX layout (``spartan-synth``; see ``generate.py``).

``world`` builds a procedural town, ``trajectory`` drives through it kinematically, ``render``
draws camera frames with numpy/OpenCV, ``captions`` describes each window. No torch.
"""
