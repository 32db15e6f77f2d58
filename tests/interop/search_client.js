// A RetrievalService client in Node: @grpc/grpc-js + @grpc/proto-loader on proto/ itself (not our stubs).
// Usage: node search_client.js ADDRESS SCENE PROTO_DIR
// Prints one JSON object: the scene list, a filtered first page with facets, and the page its token opens.
"use strict";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, scene, protoDir] = process.argv.slice(2);
const definition = protoLoader.loadSync("mmsearch/v1/retrieval.proto", {
  includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).mmsearch.v1;
const client = new v1.RetrievalService(address, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 20000);
    client[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

function summary(item) {
  const fields = item.summary ? item.summary.fields : {};
  return { id: item.id, question: fields.question.stringValue, category: fields.category.stringValue,
           found_by: item.found_by.map((f) => f.retriever) };
}

(async () => {
  const scenes = await call("ListScenes", {});
  const request = {
    scene, text: "read and write CSV files", page_size: 5, facets: ["category"],
    filters: [{ field: "category", op: "IN", values: [{ text: "csv" }, { text: "json" }] }],
  };
  const first = await call("Search", request);
  const second = await call("Search", { ...request, page_token: first.next_page_token });
  let refused = null;
  try {
    await call("Search", { scene, text: "x", filters: [{ field: "colour", op: "EQ", values: [{ text: "red" }] }] });
  } catch (err) {
    refused = { code: err.code, details: err.details };
  }
  console.log(JSON.stringify({
    scenes: scenes.scenes.map((s) => ({ name: s.name, fields: s.fields.map((f) => f.name + ":" + f.type) })),
    first: { items: first.items.map(summary), offset: first.offset, next: first.next_page_token,
             facets: first.facets.map((f) => ({ field: f.field, counts: f.counts.map((c) => [c.value, Number(c.count)]) })) },
    second: { items: second.items.map(summary), offset: second.offset },
    refused,
  }));
  client.close();
})().catch((err) => { console.error(err.stack || String(err)); process.exit(1); });
