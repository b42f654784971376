//! Spawn: starting the tasks that run calls. A new call goes to the app its number names
//! (a test app), else through the dialplan: a leading dial to the B2BUA's call task
//! ([`crate::call::spawn_call`]), anything else (prompts, menus, voicemail, rooms) to an
//! app call task ([`crate::call::spawn_app_call`]). Owns what those tasks are started
//! with: media ports, call settings, sounds, rooms, the dialplan in force.
//! Must not: answer or route SIP itself; what it cannot start comes back as
//! [`Spawned::Refused`] or [`Spawned::Load`] for the core to carry out.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::reach::{contact_for, host_for, local_ip_towards, Reacher};
use crate::apps::dialplan::{self as dialplan_app, DialStep, PlanCall, PlanEnv};
use crate::call::app_leg::AppLegParams;
use crate::call::{
    spawn_app_call, spawn_call, AppFn, AppTaskParams, Apps, CallHandle, CallLog, CallParams,
    CallRef, CallSettings, CallerLeg, CoreCommand, DialOutcome, Fallback, SoundLibrary,
    TargetResolver, TaskParams,
};
use crate::dialplan::{CallContext, Plan, Routing};
use crate::media::conference::Rooms;
use crate::media::endpoint_task::EndpointConfig;
use crate::media::{PortAllocator, Relay, RelayConfig, Remote};
use crate::metrics::NodeMetrics;
use crate::registrar::Registrar;
use crate::sip::message::{from_header, HeaderName, Request};
use crate::sip::shard::ShardId;
use crate::sip::transaction::TxKey;
use crate::sip::Peer;
use crate::voicemail::Voicemail;

/// How long a call forwarded by another node may ring here: a backstop only, as the
/// forwarding node cancels the leg at its own (dialplan's) timeout.
pub const RELAYED_RING_LIMIT: Duration = Duration::from_secs(600);

/// What starting a call came to.
#[must_use]
pub enum Spawned {
    /// A task runs the call: route these Call-IDs to it.
    Running {
        call: CallRef,
        handle: CallHandle,
        call_ids: [String; 2],
        /// What takes the caller back when nobody answers the dial.
        fallback: Option<Fallback>,
    },
    /// Not started: answer the caller's INVITE with `status` (with Retry-After when
    /// `retry_after`: media ports free up as calls end).
    Refused {
        key: TxKey,
        invite: Box<Request>,
        status: u16,
        retry_after: bool,
    },
    /// The dialplan needs this extension in memory: load it, then admit the INVITE again.
    Load { number: String, leg: Box<CallerLeg> },
}

/// Starts call and app tasks.
pub struct Spawner {
    pub settings: CallSettings,
    pub ports: PortAllocator,
    pub media_address: Option<IpAddr>,
    pub public_address: Option<String>,
    pub relay: RelayConfig,
    /// Numbers answered by apps.
    pub apps: Apps,
    pub sounds: Arc<SoundLibrary>,
    pub rooms: Arc<Rooms>,
    /// Extension numbers to phones, for the legs apps dial.
    pub resolver: TargetResolver,
    /// The same, for the B2BUA's dials (and a call another node forwarded here).
    pub reach: Arc<Reacher>,
    pub registrar: Arc<Registrar>,
    pub node_id: String,
    /// Where call tasks send their commands (the core's receiver).
    pub commands: mpsc::Sender<CoreCommand>,
    /// Where call tasks send their records (the records writer).
    pub log: CallLog,
    /// The dialplan new calls are routed by (swapped by a reload).
    pub plan: watch::Receiver<Arc<Plan>>,
    /// The mailboxes, for the dialplan's voicemail steps.
    pub voicemail: Voicemail,
    pub metrics: Arc<NodeMetrics>,
    pub next_ref: CallRef,
    /// The shard the calls started here run on: their legs' Call-IDs hash to it.
    pub shard: ShardId,
}

impl Spawner {
    /// A new call admitted from its caller: an app's number, else the dialplan.
    pub fn new_call(&mut self, leg: CallerLeg) -> Spawned {
        match self.apps.get(&leg.dialled).cloned() {
            Some(app) => self.start_app(leg, app),
            None => self.route(leg),
        }
    }

    /// Runs the dialplan for a new call: a leading dial goes to the B2BUA, anything else
    /// to the dialplan's app. Without a dialplan (no routes at all) a call goes to the
    /// extension dialled.
    fn route(&mut self, leg: CallerLeg) -> Spawned {
        let plan = self.plan.borrow().clone();
        if plan.route_count() == 0 {
            return match self.registrar.cached_extension(&leg.dialled) {
                None => Spawned::Load {
                    number: leg.dialled.clone(),
                    leg: Box::new(leg),
                },
                Some(None) => {
                    info!(caller = %leg.caller, callee = %leg.dialled, "call to an unknown number: 404");
                    refuse(leg, 404, false)
                }
                Some(Some(_)) => {
                    let numbers = vec![leg.dialled.clone()];
                    let timeout = self.settings.no_answer_timeout;
                    self.dial(leg, numbers, timeout, None, None)
                }
            };
        }
        let context = plan.start_context().unwrap_or("default").to_owned();
        let routing = plan.route(
            &CallContext {
                context: &context,
                number: &leg.dialled,
                caller: &leg.caller,
                now: jiff::Timestamp::now(),
            },
            self.registrar.as_ref(),
        );
        let actions = match routing {
            Routing::NoRoute => {
                info!(caller = %leg.caller, number = %leg.dialled, context = %context, "no route: 404");
                return refuse(leg, 404, false);
            }
            Routing::Route { at, actions } => {
                info!(caller = %leg.caller, number = %leg.dialled, route = %at, "routed");
                actions
            }
        };
        let env = PlanEnv {
            plan,
            extensions: self.registrar.clone(),
            voicemail: Some(self.voicemail.clone()),
        };
        let call = PlanCall {
            context,
            number: leg.dialled.clone(),
            caller: leg.caller.clone(),
        };
        match dialplan_app::leading_dial(&actions) {
            Some(DialStep {
                numbers,
                timeout,
                then,
            }) => {
                let fallback = dialplan_app::fallback(env, call, then);
                self.dial(leg, numbers, timeout, Some(fallback), None)
            }
            None => self.start_app(leg, dialplan_app::app(env, call, actions)),
        }
    }

    /// Rings every registered phone of `numbers` for the caller through the B2BUA (phones
    /// another node reaches through that node). When none can ring, the caller goes to
    /// the `fallback` app (for the outcomes it takes), else gets 480. A call
    /// `relayed_from` another node rings only the phones this node reaches, and that node
    /// keeps the call's rows.
    pub fn dial(
        &mut self,
        leg: CallerLeg,
        numbers: Vec<String>,
        timeout: Duration,
        fallback: Option<Fallback>,
        relayed_from: Option<String>,
    ) -> Spawned {
        let callee_call_id = self.shard.new_call_id(&mut rand::thread_rng());
        let targets = self.reach.targets(
            &numbers,
            &callee_call_id,
            relayed_from.is_none(),
            crate::now_unix(),
        );
        if targets.is_empty() {
            info!(caller = %leg.caller, callee = %leg.dialled, ?numbers, "nobody to ring");
            return match fallback {
                Some(f) if f.outcomes.contains(&DialOutcome::Unavailable) => {
                    let app = (f.app)(DialOutcome::Unavailable);
                    self.start_app(leg, app)
                }
                _ => refuse(leg, 480, false),
            };
        }
        let socks = self
            .ports
            .allocate()
            .and_then(|a| Ok((a, self.ports.allocate()?)));
        let (sock_a, sock_b) = match socks {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "no media ports: 503");
                return refuse(leg, 503, true);
            }
        };
        let relay_ports = [sock_a.rtp_addr().port(), sock_b.rtp_addr().port()];
        let media_ip = self.media_ip_towards(&leg.from);
        let relay = Relay::spawn(sock_a, sock_b, [Remote::default(); 2], self.relay);
        let public = self.public_address.clone();
        let caller_name = from_header(&leg.invite.headers)
            .ok()
            .and_then(|f| f.display.clone())
            .unwrap_or_default();
        let caller_name = caller_name.trim_matches('"').to_owned();
        let domain = targets
            .first()
            .map(|t| host_for(public.as_deref(), &t.peer))
            .unwrap_or_else(|| host_for(public.as_deref(), &leg.from));
        let caller_call_id = call_id_of(&leg.invite);
        let (outcomes, fallback) = match fallback {
            Some(f) => (f.outcomes.clone(), Some(f)),
            None => (Vec::new(), None),
        };
        let forks = targets.len();
        let params = CallParams {
            key: leg.key,
            caller_contact: contact_for(&host_for(public.as_deref(), &leg.from), &leg.from),
            invite: leg.invite,
            from: leg.from,
            offer: leg.offer,
            caller: leg.caller.clone(),
            caller_name,
            callee: leg.dialled.clone(),
            domain,
            targets,
            callee_call_id: callee_call_id.clone(),
            media_ip,
            relay_ports,
            seed: rand::random(),
            caller_dialog: leg.dialog,
            ring_timeout: Some(timeout),
            fallback: outcomes,
        };
        let call = self.next_call();
        let id = record_id(&leg.record);
        let mut settings = self.settings.clone();
        let log = match &relayed_from {
            None => {
                info!(call = %id, caller = %leg.caller, callee = %leg.dialled, forks, "call");
                self.log.clone()
            }
            Some(node) => {
                info!(call = %id, caller = %leg.caller, callee = %leg.dialled, forks, from_node = %node, "call forwarded by another node");
                // That node records the call, and writes its rows and CDR.
                settings.record = None;
                CallLog::kept_elsewhere()
            }
        };
        let handle = spawn_call(TaskParams {
            call,
            id,
            params,
            settings,
            relay,
            log,
            node_id: self.node_id.clone(),
            core: self.commands.clone(),
            record: leg.record,
        });
        Spawned::Running {
            call,
            handle,
            call_ids: [caller_call_id, callee_call_id],
            fallback,
        }
    }

    /// A call answered by an app (a test app by number, or the dialplan's): one leg,
    /// ended on our media endpoint.
    pub fn start_app(&mut self, leg: CallerLeg, app: AppFn) -> Spawned {
        let sockets = match self.ports.allocate() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "no media ports: 503");
                return refuse(leg, 503, true);
            }
        };
        let media_ip = self.media_ip_towards(&leg.from);
        let public = self.public_address.clone();
        let caller_call_id = call_id_of(&leg.invite);
        let call = self.next_call();
        let id = record_id(&leg.record);
        info!(call = %id, caller = %leg.caller, app = %leg.dialled, "app call");
        let handle = spawn_app_call(AppTaskParams {
            call,
            id,
            caller: leg.caller,
            dialled: leg.dialled,
            leg: AppLegParams {
                key: leg.key,
                local_contact: contact_for(&host_for(public.as_deref(), &leg.from), &leg.from),
                invite: leg.invite,
                from: leg.from,
                offer: leg.offer,
                media_ip,
                media_port: sockets.rtp_addr().port(),
                seed: rand::random(),
                dialog: leg.dialog,
            },
            settings: self.settings.clone(),
            sockets,
            endpoint: EndpointConfig {
                media_timeout: self.relay.media_timeout,
                latch: self.relay.latch,
            },
            app,
            sounds: self.sounds.clone(),
            rooms: self.rooms.clone(),
            log: self.log.clone(),
            node_id: self.node_id.clone(),
            core: self.commands.clone(),
            record: leg.record,
            ports: self.ports.clone(),
            resolver: self.resolver.clone(),
        });
        Spawned::Running {
            call,
            handle,
            call_ids: [caller_call_id.clone(), caller_call_id],
            fallback: None,
        }
    }

    fn next_call(&mut self) -> CallRef {
        let call = self.next_ref;
        self.next_ref += 1;
        self.metrics.calls_started.fetch_add(1, Relaxed);
        call
    }

    /// The address our SDP names towards a phone: `[media] address`, else the address
    /// the media sockets are bound to, else the local address that routes to the phone.
    fn media_ip_towards(&self, from: &Peer) -> IpAddr {
        self.media_address
            .or_else(|| Some(self.ports.ip()).filter(|ip| !ip.is_unspecified()))
            .or_else(|| local_ip_towards(from.remote))
            .unwrap_or(from.local.ip())
    }
}

fn refuse(leg: CallerLeg, status: u16, retry_after: bool) -> Spawned {
    Spawned::Refused {
        key: leg.key,
        invite: Box::new(leg.invite),
        status,
        retry_after,
    }
}

fn call_id_of(req: &Request) -> String {
    req.headers
        .get(&HeaderName::CallId)
        .unwrap_or_default()
        .to_owned()
}

/// The call's id in the store: its record's when it has one (a caller handed back from
/// the B2BUA keeps it), else a new one.
fn record_id(record: &Option<crate::call::Record>) -> String {
    record
        .as_ref()
        .map(|r| r.id().to_owned())
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}
