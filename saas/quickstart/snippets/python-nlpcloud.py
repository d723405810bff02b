import os

import nlpcloud
import requests

# The one line that points NLP Cloud's client at this server; the rest is NLP Cloud code.
nlpcloud.BASE_URL = os.environ.get("SPACY_API_URL", "http://127.0.0.1:8000")

client = nlpcloud.Client("en_core_web_sm", os.environ.get("SPACY_API_KEY", "<demo key>"))
for entity in client.entities("John Doe is a Go developer at Google in London.")["entities"]:
    print(entity["type"], entity["text"])

# The client has no batch method and does not show headers: requests (which it uses) does,
# with the client's own URL and key.
texts = [
    "Angela Merkel met Emmanuel Macron in Berlin.",
    "Apple is looking at buying U.K. startup for $1 billion.",
]
answer = requests.post(
    f"{client.root_url}/entities/batch", json={"texts": texts}, headers=client.headers, timeout=30
)
answer.raise_for_status()
for result in answer.json()["results"]:
    if "error" in result:  # this text failed; the others are answered
        print("failed:", result["error"]["detail"])
    else:
        print([entity["text"] for entity in result["entities"]])
for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
    print(f"{name}: {answer.headers[name]}")
