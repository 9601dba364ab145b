"""The napari plugin (``pip install "incasem[napari]"``): open containers, convert, predict, label, fine-tune, evaluate.

Every action is a call of incasem's Python API; this package only turns layers into the
API's arguments and its outputs into layers. The manifest ``napari.yaml`` names the
reader (:mod:`incasem.napari.reader`), the sample data (:mod:`incasem.napari.sample`) and
the dock widgets (:mod:`incasem.napari.widgets`). :mod:`incasem.napari.layers`,
:mod:`incasem.napari.regions` and :mod:`incasem.napari.actions` need napari's models only
(no Qt): the widgets are thin Qt shells over them.
"""
