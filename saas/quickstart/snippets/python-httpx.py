import os

import httpx

api = os.environ.get("SPACY_API_URL", "http://127.0.0.1:8000")
key = os.environ.get("SPACY_API_KEY", "<demo key>")

with httpx.Client(base_url=api, headers={"Authorization": f"Token {key}"}, timeout=30) as client:
    # Entities of one text
    text = "John Doe is a Go developer at Google in London."
    answer = client.post("/v1/en_core_web_sm/entities", json={"text": text})
    answer.raise_for_status()
    for entity in answer.json()["entities"]:
        print(entity["type"], entity["text"])

    # A batch: one result per text, in order; each text counts as one request
    texts = [
        "Angela Merkel met Emmanuel Macron in Berlin.",
        "Apple is looking at buying U.K. startup for $1 billion.",
    ]
    answer = client.post("/v1/en_core_web_sm/entities/batch", json={"texts": texts})
    answer.raise_for_status()
    for result in answer.json()["results"]:
        if "error" in result:  # this text failed; the others are answered
            print("failed:", result["error"]["detail"])
        else:
            print([entity["text"] for entity in result["entities"]])

    # The rate limit, as the last answer left it (Reset: UTC epoch second)
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        print(f"{name}: {answer.headers[name]}")
