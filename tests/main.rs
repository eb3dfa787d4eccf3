//! devplane's one integration test binary: a module per feature, each driving the real
//! `devplane` binary (and, as they arrive, real clients against it).

mod cli;
mod controllers;
mod deploy;
mod etcd;
mod frontdoor;
mod inprocess;
mod kubectl;
mod leader_election;
mod python_client;
mod qr;
mod rbac;
mod restart;
mod spreadsheet;
mod support;
mod webhook;
