"""The media archive: a post's images kept as local, content-addressed copies.

html       which images a post uses, and the post with them pointing at the copies (pure)
sniff      is this response an image: its content type and its magic bytes agree (pure)
archive    the content-addressed folder: one file a distinct image, named by its hash
download   one image through the polite fetcher (size cap, no Referer, images only)
archiver   the flow: the images of the posts a save writes, and later retries of failed ones
"""
