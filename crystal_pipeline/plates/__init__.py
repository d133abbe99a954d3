"""Plates: labelling a plate's images and writing the report a crystallographer acts on."""
