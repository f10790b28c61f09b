"""Images.

requests   built-in images, imports, Dockerfile builds, pulls and pushes: checked and written
steps      the operations' work: build, import, push, delete
"""
