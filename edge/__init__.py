"""The edge node: sources, engines, vision, audio, motion, link to the cloud, rig feedback."""
