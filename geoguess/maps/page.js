// geoguess map page: draws the GeoJSON embedded in #geoguess-data with Leaflet.
// Everything it needs is in the page; it fetches nothing unless tiles were asked for.
(function () {
  "use strict";
  var root = document.documentElement;
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message || e));
    root.dataset.ggErrors = JSON.stringify(errors);
  });

  function json(id) {
    return JSON.parse(document.getElementById(id).textContent);
  }
  var data = json("geoguess-data");
  var view = json("geoguess-view");
  var world = json("geoguess-basemap");

  var map = L.map("map", { worldCopyJump: true, zoomSnap: 0.25, maxZoom: 18 });
  map.setView([20, 0], 2); // vector layers need a view before they are added
  map.attributionControl.addAttribution("Basemap: Natural Earth (public domain)");
  L.geoJSON(world, {
    style: { color: "#9a9a8c", weight: 0.6, fillColor: "#f3f0e6", fillOpacity: 1 },
    interactive: false,
  }).addTo(map);
  if (view.tiles) {
    L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      maxZoom: 19,
      attribution: "&copy; OpenStreetMap contributors",
    }).addTo(map);
  }

  // Popups are built as DOM nodes with textContent: file names and places are data,
  // never markup.
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function pct(p) {
    return p === null || p === undefined ? "" : (100 * p).toFixed(p < 0.01 ? 2 : 1) + "%";
  }
  function shares(list) {
    if (!list || !list.length) return "";
    return list.slice(0, 3).map(function (a) {
      return (a.name === a.country ? a.name : a.name + ", " + a.country) + " " + pct(a.probability);
    }).join("; ");
  }
  function km(d) {
    return d === null || d === undefined ? "" : d < 10 ? d.toFixed(1) + " km" : Math.round(d) + " km";
  }
  function popup(file, lines) {
    var box = el("div", null, "gg-popup");
    box.appendChild(el("div", file, "gg-file"));
    var thumb = view.thumbnails[file];
    if (thumb) {
      var img = el("img");
      img.src = thumb;
      img.alt = "";
      box.appendChild(img);
    }
    lines.forEach(function (line) {
      if (line) box.appendChild(el("div", line));
    });
    return box;
  }
  function errorColour(errorKm) {
    if (errorKm === null || errorKm === undefined) return view.no_gps_colour;
    for (var i = 0; i < view.error_classes.length; i++) {
      var bound = view.error_classes[i][0];
      if (bound === null || errorKm < bound) return view.error_classes[i][1];
    }
    return view.no_gps_colour;
  }

  var bounds = [];
  var counts = { candidates: 0, exif: 0, photos: 0, reviewed: 0, circles: 0, heat: 0 };

  if (view.heat.length) {
    var top = view.heat[0][3];
    var heat = L.layerGroup();
    view.heat.forEach(function (c) {
      var share = Math.sqrt(c[3] / top);
      L.rectangle(
        [[c[0], c[1]], [c[0] + c[2], c[1] + c[2]]],
        { stroke: false, fillColor: "#d7301f", fillOpacity: 0.08 + 0.6 * share, className: "gg-heat", interactive: false }
      ).addTo(heat);
      counts.heat++;
    });
    heat.addTo(map);
  }

  view.circles.forEach(function (c) {
    L.polygon(c.ring, {
      color: c.level <= 0.5 ? "#b2182b" : "#ef8a62",
      weight: 1.5,
      dashArray: c.level <= 0.5 ? null : "6 4",
      fill: false,
      className: "gg-circle",
    })
      .bindTooltip(Math.round(c.level * 100) + "% of the probability within " + km(c.radius_km))
      .addTo(map);
    counts.circles++;
  });

  var best = {};
  var photos = view.kind === "scan" ? [] : null;
  data.features.forEach(function (f) {
    var p = f.properties;
    if (!f.geometry) return;
    var ll = [f.geometry.coordinates[1], f.geometry.coordinates[0]];
    if (view.kind === "scan") {
      var colour = errorColour(p.error_km);
      // A position a person set is a square, so a reviewed scan shows what is left.
      var marker = L.marker(ll, {
        icon: L.divIcon({
          className: p.reviewed ? "gg-photo gg-reviewed" : "gg-photo",
          html: '<span style="background:' + colour + '"></span>',
          iconSize: [14, 14],
        }),
        title: p.file,
      });
      marker.bindPopup(
        popup(p.file, [
          p.reviewed ? "position set by a person (reviewed)" : p.place,
          p.reviewed ? "" : "probability " + pct(p.probability) + (p.confidence ? ", " + p.confidence + " level" : ""),
          p.error_km !== null && p.error_km !== undefined ? km(p.error_km) + " from EXIF GPS" : "no EXIF GPS",
          shares(p.countries),
        ])
      );
      photos.push(marker);
      if (p.exif_lat !== null && p.exif_lat !== undefined) {
        L.polyline([ll, [p.exif_lat, p.exif_lon]], { color: colour, weight: 1, opacity: 0.7, interactive: false }).addTo(map);
        bounds.push([p.exif_lat, p.exif_lon]);
      }
      bounds.push(ll);
      counts.photos++;
      if (p.reviewed) counts.reviewed++;
    } else if (p.kind === "candidate") {
      var radius = 5 + 25 * Math.sqrt(p.probability);
      L.circleMarker(ll, {
        radius: radius,
        color: "#67000d",
        weight: 1,
        fillColor: p.rank === 1 ? "#cb181d" : "#fb6a4a",
        fillOpacity: 0.75,
        className: "gg-candidate",
      })
        .bindPopup(popup(p.file, ["#" + p.rank + " " + (p.label ? p.label + " (" + (p.place || "") + ")" : p.place || ""),
          "probability " + pct(p.probability) + (p.confidence ? "; confidence: " + p.confidence + " level" : ""),
          p.rank > 1 ? km(p.distance_from_best_km) + " from the best guess" : shares(p.countries)]))
        .bindTooltip("#" + p.rank + " " + pct(p.probability))
        .addTo(map);
      if (p.rank === 1) best[p.file] = ll;
      bounds.push(ll);
      counts.candidates++;
    } else if (p.kind === "exif_gps") {
      L.circleMarker(ll, { radius: 7, color: "#08306b", weight: 2, fillColor: "#4292c6", fillOpacity: 1, className: "gg-exif" })
        .bindPopup(popup(p.file, ["EXIF GPS", p.place, p.error_km !== null ? "guess is " + km(p.error_km) + " away" : ""]))
        .bindTooltip("EXIF GPS" + (p.error_km !== null ? ": " + km(p.error_km) + " from the guess" : ""))
        .addTo(map);
      if (best[p.file]) {
        L.polyline([best[p.file], ll], { color: "#08306b", weight: 1.5, dashArray: "4 3", className: "gg-error-line" })
          .bindTooltip(km(p.error_km))
          .addTo(map);
      }
      bounds.push(ll);
      counts.exif++;
    }
  });

  if (photos) {
    var layer = photos.length > 100 && L.markerClusterGroup
      ? L.markerClusterGroup({ disableClusteringAtZoom: 11, maxClusterRadius: 50 })
      : L.layerGroup();
    photos.forEach(function (m) { layer.addLayer(m); });
    layer.addTo(map);
  }

  view.circles.forEach(function (c) {
    if (c.level <= 0.5 && c.radius_km < 5000) c.ring.forEach(function (ll) { bounds.push(ll); });
  });
  if (bounds.length) {
    map.fitBounds(L.latLngBounds(bounds).pad(0.15), { maxZoom: 12 });
  }

  // Legend: what the colours and circles mean, and a warning for test weights.
  var legend = L.control({ position: "bottomleft" });
  legend.onAdd = function () {
    var box = el("div", null, "gg-legend");
    box.appendChild(el("div", view.title, "gg-title"));
    if (view.random_weights) box.appendChild(el("div", "Random test weights: not a geolocation", "gg-warning"));
    if (view.kind === "scan") {
      view.error_classes.forEach(function (c) {
        var row = el("div");
        var dot = el("span", null, "gg-dot");
        dot.style.background = c[1];
        row.appendChild(dot);
        row.appendChild(document.createTextNode("error " + c[2]));
        box.appendChild(row);
      });
      var none = el("div");
      var dot = el("span", null, "gg-dot");
      dot.style.background = view.no_gps_colour;
      none.appendChild(dot);
      none.appendChild(document.createTextNode("no EXIF GPS"));
      box.appendChild(none);
      if (counts.reviewed) {
        var mine = el("div");
        mine.appendChild(el("span", null, "gg-dot gg-square"));
        mine.appendChild(document.createTextNode("square: position set by a person (" + counts.reviewed + ")"));
        box.appendChild(mine);
      }
    } else {
      box.appendChild(el("div", "Red discs: candidates, sized by probability"));
      if (counts.circles) box.appendChild(el("div", "Rings: 50% (solid) and 90% (dashed) of the probability"));
      if (counts.heat) box.appendChild(el("div", "Shading: probability over the gallery"));
      if (counts.exif) box.appendChild(el("div", "Blue: the photo's EXIF GPS"));
    }
    view.notes.forEach(function (n) { box.appendChild(el("div", n, "gg-note")); });
    return box;
  };
  legend.addTo(map);

  root.dataset.ggCounts = JSON.stringify(counts);
  root.dataset.ggErrors = JSON.stringify(errors);
  root.dataset.ggReady = "1";
})();
