//! The conformance suite, once per backend.

/// The in-memory embedded store, opened by URL.
mod memory {
    devplane_store::conformance_suite!(|| async {
        let store = devplane_store::open("memory://")
            .await
            .expect("open memory://");
        Some(devplane_store::conformance::Fixture::new(store, ()))
    });
}

/// The durable embedded store in a temporary directory, opened by `file://` URL.
mod durable {
    devplane_store::conformance_suite!(|| async {
        let dir = crate::support::temp_dir();
        let url = format!("file://{}", dir.path().display());
        let store = devplane_store::open(&url)
            .await
            .expect("open file:// store");
        Some(devplane_store::conformance::Fixture::new(store, dir))
    });
}

/// etcd, one throwaway server per case (compaction is cluster-wide, so cases must not share).
mod etcd {
    devplane_store::conformance_suite!(|| async {
        let server = devplane_store::testing::EtcdServer::start_or_skip().await?;
        let store = server.store("/conformance").await;
        Some(devplane_store::conformance::Fixture::new(store, server))
    });
}
