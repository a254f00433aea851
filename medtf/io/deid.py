"""De-identification: keyed pseudonyms, the PS3.15 Annex E attribute list, the safe-meta whitelist.

Patient identity never leaves ``medtf.io``. Readers:

* replace the patient ID by :meth:`Pseudonymizer.patient` (HMAC-SHA256 with a site secret, so the
  same patient maps to the same pseudonym across runs and machines that share the key, while the
  pseudonym cannot be reversed or recomputed without the key);
* copy into :attr:`medtf.io.types.Image.meta` only the technical keys of :data:`SAFE_META_KEYS`
  (checked by :func:`check_meta`);
* never put header values into :class:`~medtf.io.types.ReadError` messages (:func:`scrub` removes any
  header string from a library's exception message before it is used in a reason).

Keeping pseudonyms stable at a site: every machine that converts data for the same study must use the
same secret. Either export ``MEDTF_PSEUDONYM_KEY`` (hex or any string, at least 16 bytes), or share the
key file (``~/.config/medtf/pseudonym.key`` by default, or the path in ``MEDTF_PSEUDONYM_KEY_FILE``),
e.g. copy it with mode 0600 to each converter host. Losing the key means new pseudonyms; leaking it
lets anyone holding candidate patient IDs test them. The secret is never written to any output.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import re
import secrets
from typing import Any, Iterable, Mapping

ENV_KEY = "MEDTF_PSEUDONYM_KEY"
ENV_KEY_FILE = "MEDTF_PSEUDONYM_KEY_FILE"
DEFAULT_KEY_FILE = pathlib.Path("~/.config/medtf/pseudonym.key")
MIN_SECRET_BYTES = 16
PSEUDONYM_HEX_CHARS = 16


def _parse_secret(text: str) -> bytes:
    """A key given as text: hex when it is valid hex of even length, else its UTF-8 bytes."""
    text = text.strip()
    if len(text) % 2 == 0 and re.fullmatch(r"[0-9a-fA-F]+", text or "x"):
        return bytes.fromhex(text)
    return text.encode("utf-8")


#: extensions kept on pseudonymous source names (file types, never identifying)
SOURCE_EXTENSIONS = (".nii.gz", ".dcm", ".dicom", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif",
                     ".tiff", ".gif", ".bmp", ".npz", ".npy")
#: a DICOM UID (or any dotted run of at least four digit groups) inside a path
UID_IN_TEXT = re.compile(r"(?<![\d.])\d+(?:\.\d+){3,}(?![\d])")


class Pseudonymizer:
    """Keyed, deterministic pseudonyms (HMAC-SHA256) for patient IDs and other identifiers.

    Args:
        secret: the site secret (at least 16 bytes). Never printed, pickled into outputs or logged.

    Raises:
        ValueError: the secret is shorter than 16 bytes.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes):
        if isinstance(secret, str):
            secret = _parse_secret(secret)
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"Pseudonymizer secret: expected at least {MIN_SECRET_BYTES} bytes, "
                f"received {len(secret) if isinstance(secret, (bytes, bytearray)) else type(secret).__name__}"
            )
        self._secret = bytes(secret)

    def __repr__(self) -> str:  # never show the secret
        return "Pseudonymizer(<secret hidden>)"

    def __reduce__(self):  # keep the secret out of pickles written by accident
        raise TypeError("Pseudonymizer cannot be pickled (it holds the site secret); pass the key file instead")

    def _mac(self, domain: bytes, value: str) -> str:
        msg = domain + b"\x00" + str(value).encode("utf-8")
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]

    def patient(self, raw_id: str) -> str:
        """Pseudonym of a patient identifier: ``"P-"`` + 16 hex chars of HMAC-SHA256.

        Args:
            raw_id: the identifier (PatientID, or a stand-in such as StudyInstanceUID).

        Returns:
            e.g. ``"P-3fa4c2d19b07e6a1"``; equal inputs give equal outputs under the same secret.
        """
        return "P-" + self._mac(b"patient", raw_id)

    def token(self, value: str) -> str:
        """Pseudonym (16 hex chars) of any other identifier, e.g. a SeriesInstanceUID."""
        return self._mac(b"token", value)

    def source(self, relpath: str, *, keep_path: bool = False) -> str:
        """The name a source file goes by in records, manifests, logs and prediction outputs.

        File and folder names are identifiers too (``DOE_JOHN_12345/``, files named after their SOP
        Instance UID), so by default a source is ``"F-"`` + 16 hex chars of HMAC-SHA256 of its path
        relative to its input root, plus its file-type extension (``.dcm``, ``.nii.gz``, ...). The same
        key maps the same path to the same name, so a key holder can map back (``tfrecord-convert
        --lookup``). ``keep_path`` keeps the path for data known to be anonymous, but any DICOM UID in it
        (dotted digit groups) is still replaced by its token.
        """
        rel = str(relpath)
        if keep_path:
            return UID_IN_TEXT.sub(lambda m: "uid-" + self.token(m.group(0)), rel)
        lower = rel.lower()
        ext = next((e for e in SOURCE_EXTENSIONS if lower.endswith(e)), "")
        return "F-" + self._mac(b"source", rel) + ext

    @classmethod
    def from_key_file(cls, path, *, create: bool = False) -> "Pseudonymizer":
        """Load the secret from ``path`` (hex or text); optionally create it (0600, 32 random bytes).

        Raises:
            FileNotFoundError: the file does not exist and ``create`` is False.
            ValueError: the key in the file is too short.
        """
        path = pathlib.Path(path).expanduser()
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"pseudonym key file {path} does not exist (expected a hex key)")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
        try:
            return cls(_parse_secret(path.read_text()))
        except ValueError as exc:
            raise ValueError(f"pseudonym key file {path}: {exc}") from None

    @classmethod
    def default(cls) -> "Pseudonymizer":
        """The site pseudonymizer: ``$MEDTF_PSEUDONYM_KEY``, else the key file
        (``$MEDTF_PSEUDONYM_KEY_FILE`` or ``~/.config/medtf/pseudonym.key``, created 0600 on first use)."""
        env = os.environ.get(ENV_KEY)
        if env:
            try:
                return cls(_parse_secret(env))
            except ValueError as exc:
                raise ValueError(f"${ENV_KEY}: {exc}") from None
        path = os.environ.get(ENV_KEY_FILE) or DEFAULT_KEY_FILE
        return cls.from_key_file(path, create=True)


# --------------------------------------------------------------------------------------------------
# PS3.15 Annex E, Table E.1-1: attributes the Basic Application Level Confidentiality Profile removes
# or replaces (names, IDs, dates/times, UIDs, addresses, institutions, physicians, comments, ...).
# Private tags and the repeating-group Overlay Comments (60xx,4000) / curve data (50xx,xxxx) are removed
# as well (see :func:`deidentify_dataset`).
ANNEX_E_KEYWORDS: tuple[str, ...] = (
    "AccessionNumber", "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDate",
    "AcquisitionDateTime", "AcquisitionDeviceProcessingDescription", "AcquisitionProtocolDescription",
    "AcquisitionTime", "AcquisitionUID", "ActualHumanPerformersSequence", "AdditionalPatientHistory",
    "AdmissionID", "AdmittingDate", "AdmittingDiagnosesCodeSequence", "AdmittingDiagnosesDescription",
    "AdmittingTime", "AffectedSOPInstanceUID", "Allergies", "AuthorObserverSequence", "BranchOfService",
    "CassetteID", "ClinicalTrialCoordinatingCenterName", "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
    "ClinicalTrialProtocolEthicsCommitteeName", "ClinicalTrialSeriesDescription", "ClinicalTrialSeriesID",
    "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSponsorName", "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointDescription", "ClinicalTrialTimePointID",
    "CommentsOnThePerformedProcedureStep", "ConcatenationUID",
    "ConfidentialityConstraintOnPatientDataDescription", "ConsultingPhysicianName", "ContentCreatorName",
    "ContentDate", "ContentTime", "ContextGroupExtensionCreatorUID", "ContributionDateTime",
    "ContributionDescription", "CountryOfResidence", "CreatorVersionUID", "CurrentPatientLocation",
    "CurveDate", "CurveTime", "CustodialOrganizationSequence", "DataSetTrailingPadding",
    "DerivationDescription", "DetectorID", "DeviceSerialNumber", "DeviceUID", "DigitalSignatureUID",
    "DigitalSignaturesSequence", "DimensionOrganizationUID", "DischargeDiagnosisDescription",
    "DistributionAddress", "DistributionName", "DoseReferenceUID", "EndAcquisitionDateTime", "EthnicGroup",
    "ExpectedCompletionDateTime", "FailedSOPInstanceUIDList", "FiducialUID",
    "FillerOrderNumberImagingServiceRequest", "FrameComments", "FrameOfReferenceUID", "GantryID",
    "GeneratorID", "GraphicAnnotationSequence", "HumanPerformerName", "HumanPerformerOrganization",
    "IconImageSequence", "IdentifyingComments", "ImageComments", "ImagePresentationComments",
    "ImagingServiceRequestComments", "Impressions", "InstanceCoercionDateTime", "InstanceCreationDate",
    "InstanceCreationTime", "InstanceCreatorUID", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionName", "InstitutionalDepartmentName", "InsurancePlanIdentification",
    "IntendedRecipientsOfResultsIdentificationSequence", "InterpretationApproverSequence",
    "InterpretationAuthor", "InterpretationDiagnosisDescription", "InterpretationIDIssuer",
    "InterpretationRecorder", "InterpretationText", "InterpretationTranscriber", "IrradiationEventUID",
    "IssuerOfAdmissionID", "IssuerOfPatientID", "IssuerOfServiceEpisodeID",
    "LargePaletteColorLookupTableUID", "LastMenstrualDate", "MAC", "MediaStorageSOPInstanceUID",
    "MedicalAlerts", "MedicalRecordLocator", "MilitaryRank", "ModifiedAttributesSequence",
    "ModifiedImageDescription", "ModifyingDeviceID", "NamesOfIntendedRecipientsOfResults", "NetworkID",
    "ObservationUID", "Occupation", "OperatorIdentificationSequence", "OperatorsName",
    "OrderCallbackPhoneNumber", "OrderEnteredBy", "OrderEntererLocation", "OriginalAttributesSequence",
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "OverlayDate",
    "OverlayTime", "PaletteColorLookupTableUID", "ParticipantSequence", "PatientAddress", "PatientAge",
    "PatientBirthDate", "PatientBirthName", "PatientBirthTime", "PatientComments", "PatientID",
    "PatientInsurancePlanCodeSequence", "PatientMotherBirthName", "PatientName",
    "PatientPrimaryLanguageCodeSequence", "PatientPrimaryLanguageModifierCodeSequence",
    "PatientReligiousPreference", "PatientSex", "PatientSexNeutered", "PatientSize", "PatientState",
    "PatientTelephoneNumbers", "PatientTransportArrangements", "PatientWeight", "PerformedLocation",
    "PerformedProcedureStepDescription", "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
    "PerformedProcedureStepID", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedStationAETitle", "PerformedStationGeographicLocationCodeSequence", "PerformedStationName",
    "PerformedStationNameCodeSequence", "PerformingPhysicianIdentificationSequence",
    "PerformingPhysicianName", "PersonAddress", "PersonIdentificationCodeSequence", "PersonName",
    "PersonTelephoneNumbers", "PhysicianApprovingInterpretation", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "PlacerOrderNumberImagingServiceRequest", "PlateID", "PreMedication", "PregnancyStatus",
    "ProtocolName", "ReasonForStudy", "ReasonForTheImagingServiceRequest",
    "ReferencedDigitalSignatureSequence", "ReferencedFrameOfReferenceUID",
    "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID", "ReferencedImageSequence",
    "ReferencedPatientAliasSequence", "ReferencedPatientSequence",
    "ReferencedPerformedProcedureStepSequence", "ReferencedSOPInstanceMACSequence",
    "ReferencedSOPInstanceUID", "ReferencedSOPInstanceUIDInFile", "ReferencedStudySequence",
    "ReferringPhysicianAddress", "ReferringPhysicianIdentificationSequence", "ReferringPhysicianName",
    "ReferringPhysicianTelephoneNumbers", "RegionOfResidence", "RelatedFrameOfReferenceUID",
    "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureComments",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureLocation",
    "RequestedSOPInstanceUID", "RequestingPhysician", "RequestingService", "ResponsibleOrganization",
    "ResponsiblePerson", "ResultsComments", "ResultsDistributionListSequence", "ResultsIDIssuer",
    "ReviewerName", "ScheduledHumanPerformersSequence", "ScheduledPatientInstitutionResidence",
    "ScheduledPerformingPhysicianIdentificationSequence", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepEndDate", "ScheduledProcedureStepEndTime",
    "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
    "ScheduledStationAETitle", "ScheduledStationGeographicLocationCodeSequence", "ScheduledStationName",
    "ScheduledStationNameCodeSequence", "ScheduledStudyLocation", "ScheduledStudyLocationAETitle",
    "SeriesDate", "SeriesDescription", "SeriesInstanceUID", "SeriesTime", "ServiceEpisodeDescription",
    "ServiceEpisodeID", "SmokingStatus", "SOPInstanceUID", "SourceImageSequence", "SpecialNeeds",
    "StationName", "StorageMediaFileSetUID", "StudyComments", "StudyDate", "StudyDescription", "StudyID",
    "StudyIDIssuer", "StudyInstanceUID", "StudyTime", "SynchronizationFrameOfReferenceUID", "TargetUID",
    "TemplateExtensionCreatorUID", "TemplateExtensionOrganizationUID", "TextComments", "TextString",
    "TimezoneOffsetFromUTC", "TopicAuthor", "TopicKeywords", "TopicSubject", "TopicTitle", "TransactionUID",
    "UID", "VerifyingObserverIdentificationCodeSequence", "VerifyingObserverName",
    "VerifyingObserverSequence", "VerifyingOrganization", "VisitComments",
)

#: The only keys readers may put into ``Image.meta``: technical, non-identifying values.
SAFE_META_KEYS: frozenset[str] = frozenset({
    # DICOM technical attributes (values copied as numbers / enumerated strings)
    "Modality", "PhotometricInterpretation", "TransferSyntax", "SOPClass", "BitsStored", "BitsAllocated",
    "PixelRepresentation", "SamplesPerPixel", "Rows", "Columns", "NumberOfFrames", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth", "VOILUTFunction",
    # what the reader did
    "format", "dtype_stored", "inverted_monochrome1", "modality_lut", "voi_applied", "color_converted",
    "spacing_default", "frame_spacing_default", "patient_id_source", "frames", "frame_index",
    "alpha_dropped", "nifti_intent", "nifti_xform", "segment_labels", "segment_numbers", "seg_type",
    "num_slices", "pages",
})

_SAFE_VALUE_TYPES = (bool, int, float, str, type(None))


def check_meta(meta: Mapping[str, Any]) -> dict:
    """Validate that ``meta`` holds only whitelisted keys with plain values.

    Args:
        meta: candidate ``Image.meta``.

    Returns:
        a plain-dict copy.

    Raises:
        ValueError: a key is not in :data:`SAFE_META_KEYS` or a value is not a number/str/bool/None
            (or a list/tuple of those).
    """
    out = {}
    for key, value in meta.items():
        if key not in SAFE_META_KEYS:
            raise ValueError(f"Image.meta key {key!r} is not in the de-identification whitelist SAFE_META_KEYS")
        items = value if isinstance(value, (list, tuple)) else (value,)
        if not all(isinstance(v, _SAFE_VALUE_TYPES) for v in items):
            raise ValueError(f"Image.meta[{key!r}]: expected numbers/strings, received {type(value).__name__}")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def is_phi_keyword(keyword: str) -> bool:
    """True when ``keyword`` is an Annex E basic-profile attribute."""
    return keyword in _ANNEX_E_SET


_ANNEX_E_SET = frozenset(ANNEX_E_KEYWORDS)


def header_strings(ds, *, min_len: int = 3) -> set[str]:
    """Every textual value in a pydicom dataset (recursively), for scrubbing messages.

    Args:
        ds: a ``pydicom.Dataset``.
        min_len: ignore values shorter than this (too short to identify anyone).

    Returns:
        the set of string values (and their components split at ``^`` and ``\\``).
    """
    values: set[str] = set()

    def visit(dataset):
        for elem in dataset:
            try:
                if elem.VR == "SQ":
                    for item in elem.value or ():
                        visit(item)
                    continue
                if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or elem.tag == 0x7FE00010:
                    continue
                raw = elem.value
                vals = raw if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [raw]
                for v in vals:
                    s = str(v).strip()
                    for part in {s, *re.split(r"[\^\\=]", s)}:
                        part = part.strip()
                        if len(part) >= min_len:
                            values.add(part)
            except Exception:  # noqa: BLE001 - a malformed element must not break scrubbing
                continue

    visit(ds)
    return values


def scrub(message: str, ds=None, extra: Iterable[str] = ()) -> str:
    """Remove header values from a (library) message so it can be used in a ReadError reason.

    Args:
        message: text that may echo header values (e.g. a pydicom exception message).
        ds: the dataset whose string values must not appear, or None.
        extra: further strings to remove.

    Returns:
        the message with each such value replaced by ``<redacted>``, truncated to 300 characters.
    """
    message = str(message)
    values = set(extra)
    if ds is not None:
        values |= header_strings(ds)
    for value in sorted(values, key=len, reverse=True):
        if value and value in message:
            message = message.replace(value, "<redacted>")
    # quoted literals in library messages are header values more often than not
    message = re.sub(r"'[^']{3,}'", "'<redacted>'", message)
    return message[:300]


def deidentify_dataset(ds, *, keep_private: bool = False):
    """Return a copy of a pydicom dataset with the Annex E attributes and private tags removed.

    UIDs and the patient ID are removed, not replaced; use :class:`Pseudonymizer` for stable keys.

    Args:
        ds: ``pydicom.Dataset``.
        keep_private: keep private tags (default: remove them).

    Returns:
        the cleaned copy (the input is not modified).
    """
    import copy

    out = copy.deepcopy(ds)

    def clean(dataset):
        for elem in list(dataset):
            if elem.keyword in _ANNEX_E_SET or (elem.tag.is_private and not keep_private):
                del dataset[elem.tag]
            elif elem.VR == "SQ":
                for item in elem.value or ():
                    clean(item)
        # overlay comments / curve data (repeating groups 50xx / 60xx text)
        for elem in list(dataset):
            if elem.tag.group & 0xFF00 in (0x5000,) or (elem.tag.group & 0xFF00 == 0x6000 and elem.tag.element == 0x4000):
                del dataset[elem.tag]

    clean(out)
    if hasattr(out, "file_meta") and "MediaStorageSOPInstanceUID" in out.file_meta:
        del out.file_meta["MediaStorageSOPInstanceUID"]
    return out


def assert_deidentified(ds) -> None:
    """Raise AssertionError naming (by keyword only) any Annex E attribute or private tag left in ``ds``."""
    found = []

    def visit(dataset):
        for elem in dataset:
            if elem.keyword in _ANNEX_E_SET and elem.value not in (None, "", b""):
                found.append(elem.keyword)
            elif elem.tag.is_private:
                found.append(f"private {elem.tag}")
            if elem.VR == "SQ":
                for item in elem.value or ():
                    visit(item)

    visit(ds)
    if found:
        raise AssertionError(f"dataset still holds identifying attributes: {sorted(set(found))}")
