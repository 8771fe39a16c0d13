"""The napari plugin: find, run, check and train models in the viewer (``pip install microzoo[napari]``).

A front end like the CLI: its widgets parse choices, start the library's work in a thread worker
(:mod:`microzoo.napari._jobs`), show progress and render the results as layers. Registered with
napari by the npe2 manifest ``napari.yaml`` beside this file. Importing this package does not
import napari or Qt; the widget modules do.
"""
