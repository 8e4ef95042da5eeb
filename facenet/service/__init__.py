"""`facenet serve`: the REST service (FastAPI) and its web page over the same gallery and face pipeline.

`store.GalleryStore` owns data/ and the synced gallery (one writer, many readers); `app.create_app` builds the HTTP
routes; `keys` checks API keys; `uploads` reads photos out of requests and limits their size; `static/` is the page.
"""
