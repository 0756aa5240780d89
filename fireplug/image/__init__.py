"""The image of a run: what is shipped (context, scan record), fp's base image and dependency layer, the one-time image, registries."""
