"""mmsearch online services: preprocess, serving, web, and their common bootstrap."""
