//! Names shared by controllers, the front door, the CLI and tests.

/// Namespace that holds the standard feature library (`manifests/library/`).
pub const LIBRARY_NAMESPACE: &str = "devplane-library";

/// Labels devplane sets or reads.
pub mod labels {
    /// Site a device belongs to (set from an OnboardingBatch's `site`).
    pub const SITE: &str = "iot.devplane.io/site";
    /// Asset a device belongs to (set from an OnboardingBatch's `asset`).
    pub const ASSET: &str = "iot.devplane.io/asset";
    /// Name of the OnboardingBatch that created a device.
    pub const BATCH: &str = "iot.devplane.io/batch";
    /// Name of the device a credentials Secret belongs to.
    pub const DEVICE: &str = "iot.devplane.io/device";
    /// Name of the gateway a credentials Secret belongs to, or that registered a Device.
    pub const GATEWAY: &str = "iot.devplane.io/gateway";
    /// Namespace of the gateway a Device registered into another namespace goes through.
    pub const GATEWAY_NAMESPACE: &str = "iot.devplane.io/gateway-namespace";
    /// Name of the ProvisioningPolicy a Device provisioned itself through.
    pub const PROVISIONING_POLICY: &str = "iot.devplane.io/provisioning-policy";
    /// Name of the Application a credentials Secret belongs to.
    pub const APPLICATION: &str = "iot.devplane.io/application";
    /// Name of the DeviceModel an EnOS product Secret belongs to.
    pub const ENOS_PRODUCT: &str = "iot.devplane.io/enos-product";
    /// Standard Kubernetes label naming the tool that manages an object.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`MANAGED_BY`] on everything devplane creates.
    pub const MANAGED_BY_VALUE: &str = "devplane";
}

/// Annotations devplane reads or writes.
pub mod annotations {
    /// On a Namespace: the namespaces (comma-separated) whose gateways may register Devices
    /// into it (`dynamicRegistration.targetNamespace`). Without it, only its own gateways may.
    pub const GATEWAY_REGISTRATIONS_FROM: &str = "iot.devplane.io/gateway-registrations-from";
    /// On a provisioned Device: the serial number it presented when it first provisioned.
    pub const PROVISIONED_SERIAL: &str = "iot.devplane.io/provisioned-serial";
    /// On a provisioned Device: it spent the one-time token of its pre-registered entry.
    pub const PROVISIONED_WITH_TOKEN: &str = "iot.devplane.io/provisioned-with-token";
    /// On a credentials Secret (and a gateway's sub-device) whose owner's name is longer than
    /// a label value may be: the whole name. The owner label then holds a shortened form of
    /// it (`devplane_core::naming::owner_label_value`).
    pub const OWNER_NAME: &str = "iot.devplane.io/owner-name";
    /// On a Device a ProvisioningPolicy created, when the policy's name is longer than a
    /// label value may be: the whole name (its label holds a shortened form).
    pub const PROVISIONING_POLICY: &str = "iot.devplane.io/provisioning-policy";
}

/// Finalizers devplane puts on objects so it can clean up before they go.
pub mod finalizers {
    /// On Devices: revoke credentials and close sessions before the device disappears.
    pub const DEVICE: &str = "iot.devplane.io/device-cleanup";
    /// On Gateways: revoke credentials before the gateway disappears.
    pub const GATEWAY: &str = "iot.devplane.io/gateway-cleanup";
    /// On OnboardingBatches: apply the deletion policy to the devices the batch created.
    pub const ONBOARDING_BATCH: &str = "iot.devplane.io/batch-cleanup";
}

/// `type` values of the `metav1.Condition`s devplane writes.
pub mod conditions {
    /// The object is fully reconciled and usable.
    pub const READY: &str = "Ready";
    /// A Device's or Gateway's model reference resolved.
    pub const MODEL_RESOLVED: &str = "ModelResolved";
    /// A Device's or Gateway's credentials Secret is issued and current.
    pub const CREDENTIALS_ISSUED: &str = "CredentialsIssued";
    /// A Device or Gateway has a live session at the front door.
    pub const CONNECTED: &str = "Connected";
    /// A Device's reported attributes match its desired attributes.
    pub const TWIN_SYNCED: &str = "TwinSynced";
    /// An OnboardingBatch is still creating devices.
    pub const PROGRESSING: &str = "Progressing";
    /// An OnboardingBatch has created every item it could.
    pub const COMPLETE: &str = "Complete";
    /// A DeviceModel with `spec.enos` holds its EnOS product key (no older model claims it).
    pub const ENOS_PRODUCT_KEY: &str = "EnosProductKey";
}

/// Field managers for server-side apply, one per writer.
pub mod field_managers {
    /// The Device controller.
    pub const DEVICE: &str = "devplane-device-controller";
    /// The Gateway controller.
    pub const GATEWAY: &str = "devplane-gateway-controller";
    /// The DeviceModel controller.
    pub const DEVICE_MODEL: &str = "devplane-devicemodel-controller";
    /// The OnboardingBatch controller.
    pub const ONBOARDING_BATCH: &str = "devplane-onboardingbatch-controller";
    /// The DeviceCommand controller.
    pub const DEVICE_COMMAND: &str = "devplane-devicecommand-controller";
    /// The Application controller.
    pub const APPLICATION: &str = "devplane-application-controller";
    /// The device front door (connection state, reported attributes, command results).
    pub const FRONTDOOR: &str = "devplane-frontdoor";
    /// The front door creating Devices for zero-touch provisioning.
    pub const PROVISIONING: &str = "devplane-provisioning";
    /// The ProvisioningPolicy controller.
    pub const PROVISIONING_POLICY: &str = "devplane-provisioningpolicy-controller";
}

/// Secret type of the credentials devplane issues to devices and gateways.
pub const CREDENTIALS_SECRET_TYPE: &str = "iot.devplane.io/device-credentials";
/// Suffix of a credentials Secret's name: device `inv-01` gets Secret `inv-01-credentials`.
pub const CREDENTIALS_SECRET_SUFFIX: &str = "-credentials";
/// Secret type of the credentials devplane issues to northbound applications.
pub const APPLICATION_SECRET_TYPE: &str = "iot.devplane.io/application-credentials";
/// Suffix of an application credentials Secret's name: Application `dashboard` gets Secret
/// `dashboard-app-credentials` (distinct from a device of the same name).
pub const APPLICATION_SECRET_SUFFIX: &str = "-app-credentials";

/// The EnOS device-protocol profile: the product Secret a DeviceModel with dynamic activation
/// gets.
pub mod enos {
    /// Suffix of the product Secret's name: model `thermo` gets Secret `thermo-enos-product`.
    pub const PRODUCT_SECRET_SUFFIX: &str = "-enos-product";
    /// Key of the product secret in that Secret.
    pub const PRODUCT_SECRET_KEY: &str = "productSecret";
    /// Secret type of the product Secret.
    pub const PRODUCT_SECRET_TYPE: &str = "iot.devplane.io/enos-product";
}

/// The device protocol's topic roots.
pub mod topics {
    /// Root of every device topic: `d/{namespace}/{name}/…`.
    pub const DEVICE_ROOT: &str = "d";
    /// Root of the northbound stream: `north/{namespace}/{device}/…`.
    pub const NORTH_ROOT: &str = "north";
}
