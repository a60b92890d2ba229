"""Camera rendering for the built-in simulator: the town as meshes, procedural
textures, actor models, weather, and the Panda3D offscreen renderer.

``mesh``, ``textures``, ``world``, ``actors`` and ``weather`` are plain numpy (no
Panda3D import); only ``panda_renderer`` talks to Panda3D.
"""
