"""Label Studio's formats, pure conversions with no server (docs/DESIGN.md §7; the files between stages:
docs/contracts/labelstudio.md): ``config`` (the labeling config XML), ``coordinates`` (percent <-> pixels), ``tasks``
(instances -> tasks), ``annotations`` (annotations -> corrections), ``source`` (a project's JSON export read as a
data source). The services that talk to a server are ``pipeline.labelstudio``.
"""
