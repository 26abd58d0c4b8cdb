//! A deterministic corpus of realistic signed notifications (1 to 6 changes, about
//! 1.5 KB each) and the wrk script that sends them in turn.

use serde_json::{json, Value};
use webhook_connector::ingress::signature::sign;

/// Change types the platform documents, and one it does not (routed to `unmatched`).
const CHANGE_TYPES: [&str; 9] = [
    "CustomerEmailChanged",
    "CustomerSmsChanged",
    "CustomerGroupEmailMarketingOptinChanged",
    "CustomerGroupSmsMarketingTextChanged",
    "CustomerRestaurantEmailMarketingDateChanged",
    "CustomerRestaurantSmsMarketingOptinChanged",
    "CustomerGroupEmailMarketingTextChanged",
    "CustomerCreated",
    "CustomerLoyaltyTierChanged",
];

const TIMESTAMPS: [&str; 4] = [
    "2018-11-16T10:46:20.7741026Z",
    "2018-11-16T10:46:20.7115562+00:00",
    "2018-11-12T10:15:00",
    "2018-11-12T09:31:00.0000000",
];

/// A small xorshift generator: the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The signed bodies and how many events they give on average.
pub struct Corpus {
    pub bodies: Vec<String>,
    pub signatures: Vec<String>,
    pub mean_events: f64,
}

impl Corpus {
    pub fn generate(count: usize, secret: &str) -> Corpus {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut bodies = Vec::with_capacity(count);
        let mut total_events = 0;
        for i in 0..count {
            let changes = 1 + rng.below(6) as usize;
            total_events += changes;
            bodies.push(notification(&mut rng, i, changes).to_string());
        }
        let signatures = bodies.iter().map(|b| sign(secret, b.as_bytes())).collect();
        Corpus {
            mean_events: total_events as f64 / count as f64,
            bodies,
            signatures,
        }
    }

    pub fn mean_bytes(&self) -> f64 {
        self.bodies.iter().map(String::len).sum::<usize>() as f64 / self.bodies.len() as f64
    }

    /// The wrk Lua script: each request sends the next body of the corpus with its
    /// signature; the first script argument is a delay in milliseconds between a
    /// connection's requests (0: as fast as answers come). `done` prints one JSON line.
    pub fn wrk_script(&self) -> String {
        let mut lua = String::from("local bodies = {\n");
        for body in &self.bodies {
            lua.push_str("[==[");
            lua.push_str(body);
            lua.push_str("]==],\n");
        }
        lua.push_str("}\nlocal signatures = {\n");
        for signature in &self.signatures {
            lua.push_str(&format!("\"{signature}\",\n"));
        }
        lua.push_str(WRK_FUNCTIONS);
        lua
    }
}

const WRK_FUNCTIONS: &str = r#"}
local next_thread = 0
function setup(thread)
  thread:set("offset", next_thread * 7919)
  next_thread = next_thread + 1
end
local counter = 0
local pause_ms = 0
function init(args)
  counter = offset or 0
  pause_ms = tonumber(args[1] or "0")
end
function delay()
  return pause_ms
end
function request()
  counter = counter + 1
  local i = (counter % #bodies) + 1
  return wrk.format("POST", "/webhooks/customer",
    {["Content-Type"] = "application/json", ["X-ResDiary-Signature"] = signatures[i]},
    bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max))
end
"#;

fn notification(rng: &mut Rng, index: usize, changes: usize) -> Value {
    let id = 10_000 + rng.below(50_000) as i64;
    let names = [
        "Aardvark", "Badger", "Capybara", "Dingo", "Echidna", "Ferret",
    ];
    let name = names[index % names.len()];
    let when = TIMESTAMPS[index % TIMESTAMPS.len()];
    let changes: Vec<Value> = (0..changes)
        .map(|_| {
            let change_type = CHANGE_TYPES[rng.below(CHANGE_TYPES.len() as u64) as usize];
            let (old, new) = match rng.below(4) {
                0 => (json!(true), json!(false)),
                1 => (json!("+44 7700 900001"), json!("+44 7700 900002")),
                2 => (
                    json!("Would you like to receive news and offers from Laharna by Email"),
                    Value::Null,
                ),
                _ => (
                    json!("2018-11-12T09:31:00.0000000"),
                    json!("2018-11-16T10:46:20.7741026Z"),
                ),
            };
            json!({"ChangeType": change_type, "OldValue": old, "NewValue": new})
        })
        .collect();
    json!({
        "ChangeDateTime": when,
        "Customer": {
            "Id": id,
            "Title": "Dr",
            "FirstName": name,
            "Surname": "Anderson",
            "RelatedProviderId": 1044,
            "MobileNumber": "+44 7700 900002",
            "Company": "Animalania",
            "Email": format!("{}.{}@example.com", name.to_lowercase(), id),
            "ReceiveGroupEmailMarketing": false,
            "GroupEmailMarketingOptInDateTime": null,
            "GroupEmailMarketingOptInText": null,
            "ReceiveGroupSmsMarketing": true,
            "GroupSmsMarketingOptInDateTime": "2018-11-12T10:15:00",
            "GroupSmsMarketingOptInText": "Would you like to receive news and offers from Laharna by SMS",
            "ReceiveRestaurantEmailMarketing": false,
            "RestaurantEmailMarketingOptInDateTime": null,
            "RestaurantEmailMarketingOptInText": null,
            "ReceiveRestaurantSmsMarketing": true,
            "RestaurantSmsMarketingOptInDateTime": "2018-11-16T10:46:20.7115562+00:00",
            "RestaurantSmsMarketingOptInText": "Would you like to receive news and offers from Testaurant by SMS"
        },
        "Changes": changes,
    })
}
