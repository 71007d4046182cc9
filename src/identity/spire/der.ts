/**
 * A minimal DER reader for the parts of X.509 certificates that node:crypto does not expose:
 * splitting concatenated certificates and reading the raw extensions (RFC 5280 section 4.1).
 */

/** One DER element: its tag byte and where its contents sit in the buffer. */
export interface DerElement {
  tag: number;
  /** Offset of the first content byte. */
  start: number;
  /** Offset just past the last content byte. */
  end: number;
}

/** A certificate extension as encoded in the certificate. */
export interface CertificateExtension {
  /** Dotted object identifier, such as "2.5.29.17". */
  oid: string;
  critical: boolean;
  /** Contents of the extnValue OCTET STRING. */
  value: Buffer;
}

const TAG_BOOLEAN = 0x01;
const TAG_OCTET_STRING = 0x04;
const TAG_OBJECT_IDENTIFIER = 0x06;
const TAG_SEQUENCE = 0x30;
/** Context-specific, constructed, number 3: the `extensions` field of TBSCertificate. */
const TAG_EXTENSIONS = 0xa3;

/** Error for bytes that are not the DER structure the caller expected. */
export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

/** Reads the element that starts at `offset`. Throws DerError when it does not fit in `end`. */
export function readDerElement(data: Uint8Array, offset: number, end = data.length): DerElement {
  if (offset + 2 > end) {
    throw new DerError(`truncated DER element at offset ${offset}`);
  }
  const tag = data[offset];
  const firstLengthByte = data[offset + 1];
  let length: number;
  let start: number;
  if (firstLengthByte < 0x80) {
    length = firstLengthByte;
    start = offset + 2;
  } else {
    // Long form: the low 7 bits count the length bytes that follow. Four bytes cover any
    // certificate, and 0x80 (indefinite length) is not allowed in DER.
    const lengthBytes = firstLengthByte & 0x7f;
    if (lengthBytes === 0 || lengthBytes > 4) {
      throw new DerError(`unsupported DER length encoding at offset ${offset}`);
    }
    if (offset + 2 + lengthBytes > end) {
      throw new DerError(`truncated DER length at offset ${offset}`);
    }
    length = 0;
    for (let index = 0; index < lengthBytes; index++) {
      length = length * 256 + data[offset + 2 + index];
    }
    start = offset + 2 + lengthBytes;
  }
  if (start + length > end) {
    throw new DerError(
      `DER element at offset ${offset} claims ${length} bytes but only ${end - start} remain`,
    );
  }
  return { tag, start, end: start + length };
}

/** Returns the direct children of a constructed element. */
export function readDerChildren(data: Uint8Array, parent: DerElement): DerElement[] {
  const children: DerElement[] = [];
  let offset = parent.start;
  while (offset < parent.end) {
    const child = readDerElement(data, offset, parent.end);
    children.push(child);
    offset = child.end;
  }
  return children;
}

/**
 * Splits concatenated DER certificates (as the Workload API and SPIRE send chains and bundles)
 * into one buffer per certificate. Throws DerError when the bytes are not a sequence of
 * complete DER SEQUENCE elements.
 */
export function splitDerSequence(data: Uint8Array): Buffer[] {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset < data.length) {
    const element = readDerElement(data, offset);
    if (element.tag !== TAG_SEQUENCE) {
      throw new DerError(`expected a DER SEQUENCE at offset ${offset}, found tag 0x${hex(element.tag)}`);
    }
    parts.push(Buffer.from(data.subarray(offset, element.end)));
    offset = element.end;
  }
  return parts;
}

/** Reads the extensions of a DER certificate. A certificate without extensions gives []. */
export function readCertificateExtensions(der: Uint8Array): CertificateExtension[] {
  const certificate = expectTag(der, readDerElement(der, 0), TAG_SEQUENCE, 'Certificate');
  const [tbsCertificate] = readDerChildren(der, certificate);
  if (tbsCertificate === undefined) {
    throw new DerError('the Certificate SEQUENCE is empty');
  }
  expectTag(der, tbsCertificate, TAG_SEQUENCE, 'TBSCertificate');

  const extensionsField = readDerChildren(der, tbsCertificate).find(
    (child) => child.tag === TAG_EXTENSIONS,
  );
  if (extensionsField === undefined) {
    return [];
  }
  const [extensionList] = readDerChildren(der, extensionsField);
  if (extensionList === undefined) {
    throw new DerError('the extensions field is empty');
  }
  expectTag(der, extensionList, TAG_SEQUENCE, 'Extensions');

  return readDerChildren(der, extensionList).map((extension) => {
    const fields = readDerChildren(der, expectTag(der, extension, TAG_SEQUENCE, 'Extension'));
    const oidField = fields[0];
    if (oidField === undefined) {
      throw new DerError('an Extension has no extnID');
    }
    expectTag(der, oidField, TAG_OBJECT_IDENTIFIER, 'extnID');
    // Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
    let critical = false;
    let valueField = fields[1];
    if (valueField?.tag === TAG_BOOLEAN) {
      critical = valueField.end > valueField.start && der[valueField.start] !== 0;
      valueField = fields[2];
    }
    if (valueField === undefined) {
      throw new DerError('an Extension has no extnValue');
    }
    expectTag(der, valueField, TAG_OCTET_STRING, 'extnValue');
    return {
      oid: decodeObjectIdentifier(der.subarray(oidField.start, oidField.end)),
      critical,
      value: Buffer.from(der.subarray(valueField.start, valueField.end)),
    };
  });
}

/** Decodes the contents of an OBJECT IDENTIFIER into dotted form. */
export function decodeObjectIdentifier(contents: Uint8Array): string {
  if (contents.length === 0) {
    throw new DerError('empty OBJECT IDENTIFIER');
  }
  const arcs: number[] = [];
  let value = 0;
  for (const byte of contents) {
    value = value * 128 + (byte & 0x7f);
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0;
    }
  }
  // The first encoded number packs the first two arcs as 40 * first + second.
  const first = arcs[0] ?? 0;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

function expectTag(data: Uint8Array, element: DerElement, tag: number, name: string): DerElement {
  if (element.tag !== tag) {
    throw new DerError(`expected ${name} (tag 0x${hex(tag)}), found tag 0x${hex(element.tag)}`);
  }
  if (element.end > data.length) {
    throw new DerError(`${name} extends past the end of the data`);
  }
  return element;
}

function hex(value: number): string {
  return value.toString(16).padStart(2, '0');
}
