// GraphiQL wired to this server: queries and mutations over POST /graphql, subscriptions
// over /graphql/ws (graphql-transport-ws, GraphiQL's bundled graphql-ws client).
//
// Authorization: open /graphql#token=<JWT> and the Headers tab holds
// {"Authorization": "Bearer <JWT>"}; a fragment never reaches the server, so the token is
// not in any access log. GraphiQL sends the Headers tab with every request and as the
// WebSocket connection_init payload, so one edited token serves both.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = JSON.stringify(
  { Authorization: `Bearer ${token || "<paste a token>"}` },
  null,
  2,
);
const wsScheme = location.protocol === "https:" ? "wss:" : "ws:";
const fetchGraphQL = GraphiQL.createFetcher({
  url: "/graphql",
  subscriptionUrl: `${wsScheme}//${location.host}/graphql/ws`,
});

// HTTP header names ignore case, payload keys do not: send the connection_init payload
// the server documents, {"authorization": "Bearer <JWT>"}.
function lowerCaseAuthorization(given) {
  const out = {};
  for (const [name, value] of Object.entries(given || {})) {
    out[name.toLowerCase() === "authorization" ? "authorization" : name] = value;
  }
  return out;
}

function fetcher(params, options) {
  return fetchGraphQL(params, {
    ...options,
    headers: lowerCaseAuthorization(options && options.headers),
  });
}

const defaultQuery = `# adaptive-engine. The Headers tab carries your token: open this page as
# /graphql#token=<JWT> to fill it in (the server mints one with
# \`adaptive-engine token --role admin --sub me\`).
# Subscriptions (e.g. thetaUpdates, examActivity) run over /graphql/ws.

{
  assessments {
    id
    name
    status
  }
}
`;

ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher,
    headers,
    defaultQuery,
    defaultEditorToolsVisibility: "headers",
  }),
);
