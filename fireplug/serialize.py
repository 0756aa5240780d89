"""Fast Blosc-compressed HDF5 save/load for arrays, DataFrames and sparse matrices.

Bundled in every fp base image so that containers and laptops share one file format.
The API (``save``, ``load``, ``Writer``) is specified in issue 4 and not implemented yet;
this module imports nothing else from fireplug.
"""
