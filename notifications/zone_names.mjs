// Writes notifications/zone_names.json: each IANA zone's readable name in the patient
// languages, from the Unicode CLDR data built into Node's Intl (full ICU).
//
//   python3 -c 'import zoneinfo; print("\n".join(sorted(zoneinfo.available_timezones())))' \
//     | node notifications/zone_names.mjs > notifications/zone_names.json
//
// The generic name ("Central European Time", "Eastern Time") is the one that holds all year;
// zones CLDR has no generic name for come out as "GMT+03:00" and take the long name instead
// when it is a real one ("Coordinated Universal Time").
import { readFileSync } from "node:fs";

const LANGUAGES = ["en", "es"];
const zones = readFileSync(0, "utf8").split("\n").map((z) => z.trim()).filter(Boolean);

function name(zone, language, style) {
  const parts = new Intl.DateTimeFormat(language, { timeZone: zone, timeZoneName: style })
    .formatToParts(new Date(Date.UTC(2026, 0, 15)));
  return parts.find((p) => p.type === "timeZoneName").value;
}

const out = {};
for (const zone of zones) {
  try {
    const names = {};
    for (const language of LANGUAGES) {
      let readable = name(zone, language, "longGeneric");
      if (/^GMT/.test(readable)) {
        const long = name(zone, language, "long");
        if (!/^GMT/.test(long)) readable = long;
      }
      names[language] = readable;
    }
    out[zone] = names;
  } catch (error) {
    // A name Python knows and ICU does not: left out, and shown by its city instead.
  }
}
// One zone a line, in order, so that a regenerated file reads as a small diff.
const lines = Object.keys(out).sort().map((zone) => `${JSON.stringify(zone)}: ${JSON.stringify(out[zone])}`);
process.stdout.write(`{\n${lines.join(",\n")}\n}\n`);
