"""Images.

requests   built-in images, imports, Dockerfile builds, pulls and pushes: checked and written
steps      the operations' work: build, import, push, delete
content    an image's content as it travels between hosts, and its digest
copies     a host's copies of images made elsewhere: served by the API, fetched before a create, removed when stale
"""
