"""The API's interactive documentation, /docs (Swagger UI) and /redoc (ReDoc), served from files
shipped in the package."""
