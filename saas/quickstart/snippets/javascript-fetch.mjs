const api = process.env.SPACY_API_URL ?? "http://127.0.0.1:8000";
const key = process.env.SPACY_API_KEY ?? "<demo key>";

async function post(path, body) {
  const answer = await fetch(`${api}${path}`, {
    method: "POST",
    headers: { Authorization: `Token ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!answer.ok) throw new Error(`${answer.status}: ${await answer.text()}`);
  return answer;
}

// Entities of one text
const text = "John Doe is a Go developer at Google in London.";
const { entities } = await (await post("/v1/en_core_web_sm/entities", { text })).json();
for (const entity of entities) console.log(entity.type, entity.text);

// A batch: one result per text, in order; each text counts as one request
const texts = [
  "Angela Merkel met Emmanuel Macron in Berlin.",
  "Apple is looking at buying U.K. startup for $1 billion.",
];
const answer = await post("/v1/en_core_web_sm/entities/batch", { texts });
for (const result of (await answer.json()).results) {
  if (result.error) console.log("failed:", result.error.detail); // the others are answered
  else console.log(result.entities.map((entity) => entity.text));
}

// The rate limit, as the last answer left it (Reset: UTC epoch second)
for (const name of ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]) {
  console.log(`${name}: ${answer.headers.get(name)}`);
}
