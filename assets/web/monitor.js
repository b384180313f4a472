// The proctors' live progress page (/monitor): lists the assessments, then follows every
// exam of the chosen one through the examActivity subscription. Plain browser APIs, no
// build step; it talks to /graphql and /graphql/ws like any other client.
//
// The token comes from the form or from the fragment (/monitor#token=<JWT>, optionally
// &assessment=<id>), which never reaches the server. On the WebSocket it is sent in the
// connection_init payload, as graphql-transport-ws clients do.
"use strict";

const ASSESSMENTS = "{ assessments { id name status } }";
const EXAMS = `query ($id: ID!) {
  exams(filter: { assessmentId: $id }, first: 100) {
    nodes { id studentId status itemsCompleted theta standardError }
  }
}`;
const ACTIVITY = `subscription ($id: ID!) {
  examActivity(assessmentId: $id) {
    kind examSessionId studentId itemsCompleted theta standardError status at
  }
}`;

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/graphql/ws`;

/** Exam id → { exam, tr }: one table row per exam. */
const rows = new Map();
/** The WebSocket of the assessment being watched (null when none). */
let socket = null;
/** The assessment being watched ("" when none). */
let watching = "";

const token = () => $("token").value.trim().replace(/^Bearer\s+/i, "");

function setConnection(state, text) {
  $("connection").dataset.state = state;
  $("connection").textContent = text;
}

async function graphql(query, variables) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token()}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response
    .json()
    .catch(() => ({ errors: [{ message: `HTTP ${response.status}` }] }));
  if (body.errors && body.errors.length) {
    throw new Error(body.errors.map((e) => e.message).join("; "));
  }
  return body.data;
}

async function loadAssessments(event) {
  if (event) event.preventDefault();
  watch("");
  const select = $("assessment");
  setConnection("idle", "Loading assessments…");
  try {
    const { assessments } = await graphql(ASSESSMENTS);
    select.replaceChildren(
      new Option("— choose —", ""),
      ...assessments.map((a) => {
        const archived = a.status === "ARCHIVED" ? ", archived" : "";
        return new Option(`${a.name} (#${a.id}${archived})`, a.id);
      }),
    );
    select.disabled = false;
    setConnection("idle", `${assessments.length} assessment(s): choose one to watch.`);
  } catch (error) {
    setConnection("error", `Cannot list assessments: ${error.message}`);
  }
}

/** Stops watching the current assessment and starts watching `assessmentId` (if any). */
function watch(assessmentId) {
  watching = assessmentId;
  if (socket) {
    const old = socket;
    socket = null; // its close event is then ignored
    old.close(1000);
  }
  rows.clear();
  render();
  if (assessmentId) connect(assessmentId, 0);
  else setConnection("idle", "Not connected.");
}

function connect(assessmentId, attempt) {
  setConnection("connecting", "Connecting…");
  const ws = new WebSocket(wsUrl, "graphql-transport-ws");
  const send = (message) => ws.send(JSON.stringify(message));
  socket = ws;
  ws.onopen = () =>
    send({ type: "connection_init", payload: { authorization: `Bearer ${token()}` } });
  ws.onmessage = async (event) => {
    if (socket !== ws) return;
    const message = JSON.parse(event.data);
    switch (message.type) {
      case "connection_ack":
        attempt = 0;
        send({
          id: "activity",
          type: "subscribe",
          payload: { query: ACTIVITY, variables: { id: assessmentId } },
        });
        // Events are delivered at most once: after every (re)subscription, read the state
        // of the exams already running.
        try {
          const { exams } = await graphql(EXAMS, { id: assessmentId });
          if (socket === ws) exams.nodes.forEach((exam) => show(exam, false));
          if (socket === ws) setConnection("live", `Live: assessment #${assessmentId}.`);
        } catch (error) {
          if (socket === ws) {
            setConnection("live", `Live: assessment #${assessmentId} (running exams not listed: ${error.message}).`);
          }
        }
        break;
      case "next":
        if (message.payload.data) show(message.payload.data.examActivity, true);
        else setConnection("error", errorText(message.payload.errors));
        break;
      case "error":
        setConnection("error", errorText(message.payload));
        break;
      case "ping":
        send({ type: "pong" });
        break;
      case "complete":
        setConnection("closed", "The server ended the subscription.");
        break;
    }
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    const reason = event.reason || `code ${event.code}`;
    // 44xx: refused (no or expired token, limits): retrying with the same token cannot help.
    if (event.code >= 4400 && event.code < 4500) {
      setConnection("closed", `Disconnected: ${reason}. Check the token, then load again.`);
      return;
    }
    const seconds = Math.min(30, 2 ** attempt);
    setConnection("closed", `Disconnected (${reason}); reconnecting in ${seconds} s…`);
    setTimeout(() => {
      if (watching === assessmentId && socket === null) connect(assessmentId, attempt + 1);
    }, seconds * 1000);
  };
}

const errorText = (errors) => (errors || []).map((e) => e.message).join("; ") || "error";

/** How far an exam has got: later states never give way to older ones. */
const progress = (exam) => exam.itemsCompleted * 2 + (exam.status === "ACTIVE" ? 0 : 1);

/** Shows an exam: from an examActivity event (`live`) or from the exams query. */
function show(update, live) {
  const exam = {
    id: update.examSessionId || update.id,
    studentId: update.studentId,
    status: update.status,
    itemsCompleted: update.itemsCompleted,
    theta: update.theta,
    standardError: update.standardError,
    at: update.at,
  };
  const row = rows.get(exam.id);
  // A listed state older than an event already shown (the query raced the events).
  if (!live && row && progress(row.exam) >= progress(exam)) return;
  if (row && !exam.at) exam.at = row.exam.at;
  rows.set(exam.id, { exam, tr: row ? row.tr : null });
  render(exam.id);
}

const number = (x) => (x === null || x === undefined ? "—" : x.toFixed(3));
const time = (at) => (at ? new Date(at).toLocaleTimeString() : "—");

/** Redraws the summary and the row of `changed` (all rows when omitted). */
function render(changed) {
  const body = $("exams");
  $("empty").hidden = rows.size > 0;
  if (rows.size === 0) body.querySelectorAll("tr[data-exam-id]").forEach((tr) => tr.remove());
  for (const [id, row] of rows) {
    if (changed && id !== changed) continue;
    const { exam } = row;
    if (!row.tr) {
      row.tr = document.createElement("tr");
      row.tr.dataset.examId = exam.id;
      for (const name of ["student", "exam", "status", "items", "theta", "se", "at"]) {
        const td = row.tr.insertCell();
        td.className = name;
      }
      // Rows stay in student order, so a proctor finds a student where they were.
      const next = [...body.querySelectorAll("tr[data-exam-id]")].find(
        (tr) => tr.cells[0].textContent.localeCompare(exam.studentId) > 0,
      );
      body.insertBefore(row.tr, next || null);
    }
    const cells = row.tr.cells;
    cells[0].textContent = exam.studentId;
    cells[1].textContent = `#${exam.id}`;
    cells[2].textContent = exam.status;
    cells[2].dataset.status = exam.status;
    cells[3].textContent = exam.itemsCompleted;
    cells[4].textContent = number(exam.theta);
    cells[5].textContent = number(exam.standardError);
    cells[6].textContent = time(exam.at);
    for (const i of [3, 4, 5]) cells[i].classList.add("number");
    row.tr.classList.remove("changed");
    void row.tr.offsetWidth; // restart the highlight animation
    row.tr.classList.add("changed");
  }
  const count = (status) => [...rows.values()].filter((r) => r.exam.status === status).length;
  $("summary").textContent = rows.size
    ? `${rows.size} exam(s): ${count("ACTIVE")} active, ${count("COMPLETED")} completed, ${count("ABANDONED")} abandoned.`
    : "";
}

$("controls").addEventListener("submit", loadAssessments);
$("assessment").addEventListener("change", (event) => watch(event.target.value));

// /monitor#token=<JWT>&assessment=<id>: fill the form, list, and watch at once.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  $("token").value = fragment.get("token");
  loadAssessments().then(() => {
    const wanted = fragment.get("assessment");
    if (wanted && [...$("assessment").options].some((o) => o.value === wanted)) {
      $("assessment").value = wanted;
      watch(wanted);
    }
  });
}
