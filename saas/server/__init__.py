"""The HTTP server around the app: Uvicorn's protocol with the limits it lacks, the options both
`saas serve` and Gunicorn give Uvicorn, and the Gunicorn worker class."""
