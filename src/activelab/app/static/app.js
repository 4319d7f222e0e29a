// The labelling page: keyboard and click labelling of the queue the server rendered.
// Text is only ever written with textContent, never parsed as HTML.
(function () {
  "use strict";
  const root = document.getElementById("labeller");
  if (!root) {
    return;
  }
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const data = JSON.parse(document.getElementById("queue-data").textContent);
  const classes = data.classes;
  const items = data.queue;
  const grid = document.getElementById("grid");
  const status = document.getElementById("status");
  const done = document.getElementById("done");
  const annotator = document.getElementById("annotator");
  const history = [];
  let current = 0;

  annotator.value = localStorage.getItem("activelab-annotator") || "";
  annotator.addEventListener("change", function () {
    localStorage.setItem("activelab-annotator", annotator.value);
  });

  function text(tag, className, content) {
    const element = document.createElement(tag);
    element.className = className;
    element.textContent = content;
    return element;
  }

  function describeGuess(item) {
    if (item.kind === "test") {
      return "test image";
    }
    if (item.guess === null) {
      return "chosen at random (no model yet)";
    }
    return "guess: " + item.guess + " (" + Math.round(item.confidence * 100) + " %)";
  }

  function makeCard(item, index) {
    const card = document.createElement("figure");
    card.className = "card " + item.kind;
    card.dataset.id = String(item.id);
    const image = document.createElement("img");
    image.src = "/images/" + encodeURIComponent(item.id);
    image.alt = item.name;
    const caption = document.createElement("figcaption");
    caption.appendChild(text("span", "name", item.name));
    caption.appendChild(text("span", "guess", describeGuess(item)));
    item.labelElement = text("span", "label", "not labelled");
    caption.appendChild(item.labelElement);
    card.appendChild(image);
    card.appendChild(caption);
    card.addEventListener("click", function () { select(index); });
    return card;
  }

  items.forEach(function (item, index) {
    item.label = null;
    item.skipped = false;
    item.card = makeCard(item, index);
    grid.appendChild(item.card);
  });

  function say(message, isError) {
    status.textContent = message;
    status.className = isError ? "error" : "";
  }

  function select(index) {
    if (!items.length) {
      return;
    }
    current = Math.max(0, Math.min(items.length - 1, index));
    items.forEach(function (item, position) {
      item.card.classList.toggle("current", position === current);
    });
    items[current].card.scrollIntoView({block: "nearest"});
  }

  function nextOpen(from) {
    for (let index = from + 1; index < items.length; index += 1) {
      if (items[index].label === null && !items[index].skipped) {
        return index;
      }
    }
    return Math.min(from + 1, items.length - 1);
  }

  function refreshDone() {
    done.hidden = !items.every(function (item) { return item.label !== null || item.skipped; });
  }

  function show(item) {
    item.labelElement.textContent = item.label === null ? (item.skipped ? "skipped" : "not labelled")
      : "label: " + classes[item.label];
    item.card.classList.toggle("labelled", item.label !== null);
    item.card.classList.toggle("skipped", item.skipped);
    refreshDone();
  }

  async function post(url, body) {
    body.annotator = annotator.value;
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body)
    });
    const answer = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      throw new Error(answer.error || (answer.detail && JSON.stringify(answer.detail)) || response.statusText);
    }
    return answer;
  }

  async function label(index, classIndex) {
    const item = items[index];
    if (!item || classIndex >= classes.length) {
      return;
    }
    const previous = item.label;
    try {
      await post("/api/label", {id: item.id, label: classIndex});
    } catch (error) {
      say(error.message, true);
      return;
    }
    history.push({index: index, previous: previous});
    item.label = classIndex;
    item.skipped = false;
    show(item);
    say(item.name + ": " + classes[classIndex], false);
    select(nextOpen(index));
  }

  async function undo() {
    const last = history.pop();
    if (!last) {
      say("nothing to undo", false);
      return;
    }
    const item = items[last.index];
    try {
      if (last.previous === null) {
        await post("/api/unlabel", {id: item.id});
      } else {
        await post("/api/label", {id: item.id, label: last.previous});
      }
    } catch (error) {
      history.push(last);
      say(error.message, true);
      return;
    }
    item.label = last.previous;
    show(item);
    say("undone: " + item.name, false);
    select(last.index);
  }

  async function skip(index) {
    const item = items[index];
    if (!item) {
      return;
    }
    if (item.kind === "batch" && item.label === null && !item.skipped) {
      try {
        await post("/api/skip", {id: item.id});
      } catch (error) {
        say(error.message, true);
        return;
      }
      item.skipped = true;
      show(item);
    }
    select(nextOpen(index));
  }

  document.querySelectorAll("#classes button.class").forEach(function (button) {
    button.addEventListener("click", function () { label(current, Number(button.dataset.index)); });
  });

  document.addEventListener("keydown", function (event) {
    if (event.target instanceof HTMLInputElement || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const key = event.key;
    if (key >= "1" && key <= "9") {
      label(current, Number(key) - 1);
    } else if (key === "ArrowRight" || key === "ArrowDown") {
      select(current + 1);
    } else if (key === "ArrowLeft" || key === "ArrowUp") {
      select(current - 1);
    } else if (key === "u") {
      undo();
    } else if (key === "s") {
      skip(current);
    } else {
      return;
    }
    event.preventDefault();
  });

  select(0);
})();
