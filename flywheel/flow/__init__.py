"""The flows (train → evaluate → gate → promote, registry, recovery), written against core's ports."""
