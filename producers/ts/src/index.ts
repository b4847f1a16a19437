export * from "./errors";
export * from "./wire";
export * from "./integrations";
export { Meter, Span, PRODUCER_NAME, VERSION } from "./meter";
export type { MeterOptions, NodeOptions, RecordOptions, RequestOptions, Transport } from "./meter";
export { KafkaTransport, crc32Partitioner, defaultSpoolDir } from "./kafka";
export type { Compression, KafkaTransportOptions, TransportStats } from "./kafka";
export { MemoryTransport } from "./memory";
export { KafkaSecurity, KAFKA_CONFIG_VAR, SASL_MECHANISMS, SECURITY_PROTOCOLS, SECURITY_VARS, readKafkaConfigFile }
  from "./security";
export type { KafkaSecurityOptions, KafkajsSasl, KafkajsSecurity, SaslMechanism, SecurityProtocol } from "./security";
